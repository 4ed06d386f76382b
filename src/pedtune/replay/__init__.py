"""A recorded benchmark of the tuning problem (``pedtune record``) and sweeps replayed on it (``pedtune compare``)."""
