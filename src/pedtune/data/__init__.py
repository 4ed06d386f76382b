"""The dataset: fetched and checked whole, split with a seed, decoded into samples."""
