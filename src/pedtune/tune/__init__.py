"""The Ray Tune machinery of the tune stage: space, searchers, trainable, sweep storage, results, outputs."""
