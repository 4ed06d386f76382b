"""Benchmarks of pedtune's overheads (scripts, not tests); see bench/README.md."""
