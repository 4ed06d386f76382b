"""MLflow, all of it: the tracking store, runs and their tags, a sweep's parent and trial runs."""
