"""What the evaluate stage writes besides ``paths.EVALUATE_METRICS`` (the outs dvc.yaml declares)."""

from pathlib import Path

from pedtune import paths

REPORT = paths.EVALUATE_DIR / "report.md"
# Verdicts, method and every test metric: what metrics/evaluate.json (numbers DVC diffs) leaves out.
SUMMARY = paths.EVALUATE_DIR / "summary.json"
PER_SEED_PLOT = paths.EVALUATE_DIR / "per_seed.png"
PICTURES = paths.EVALUATE_DIR / "pictures"
# Outside EVALUATE_DIR: a DVC plots file may not lie inside a directory out of the same stage.
PER_SEED_CSV = Path("plots/evaluate/per_seed.csv")
