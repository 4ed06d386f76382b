"""Record and replay: a recorded table of learning curves (``pedtune record``) and Ray Tune sweeps replayed
on it (``pedtune compare``)."""
