"""What the evaluate stage writes besides ``paths.EVALUATE_METRICS`` (the outs dvc.yaml declares)."""

from pathlib import Path

from pedtune import paths

REPORT = paths.EVALUATE_DIR / "report.md"
PER_SEED_PLOT = paths.EVALUATE_DIR / "per_seed.png"
PICTURES = paths.EVALUATE_DIR / "pictures"
# Outside EVALUATE_DIR: a DVC plots file may not lie inside a directory out of the same stage.
PER_SEED_CSV = Path("plots/evaluate/per_seed.csv")
