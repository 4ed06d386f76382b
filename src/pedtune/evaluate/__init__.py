"""The final evaluation's machinery: planned runs, their parallel execution, statistics, report, pictures."""
