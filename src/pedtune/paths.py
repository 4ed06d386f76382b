"""Where each stage reads and writes, relative to the repository root (the files dvc.yaml declares)."""

import os
from pathlib import Path

DATA_ROOT = Path("data/dataset")  # PennFudanPed's folders, or a COCO dataset's images/ and annotations/
DATA_INDEX = Path("data/index.json")  # what the fetch stage's checks found: images, sizes, categories (data.index)
DATA_DOWNLOADS = Path("data/downloads")  # kept between runs so a re-fetch needs no re-download
SPLIT_FILE = Path("data/split.json")
PRETRAINED = Path("models/pretrained.pt")
TRAINED_MODEL = Path("models/model.pt")
TUNED_MODEL = Path("models/tuned.pt")  # the evaluate stage's: the tuned configuration, first evaluate seed
TRAIN_METRICS = Path("metrics/train.json")
TRAIN_HISTORY = Path("plots/train/history.csv")
TUNE_DIR = Path("results/tune")
BEST_PARAMS = TUNE_DIR / "best_params.yaml"  # the tuned train section, read by evaluate
TUNE_METRICS = Path("metrics/tune.json")
EVALUATE_DIR = Path("results/evaluate")
EVALUATE_METRICS = Path("metrics/evaluate.json")
# Each stage's run record (pedtune.tracking.record): its MLflow run, commit and environment.
STAGE_RUNS = {"train": Path("results/train/mlflow_run.json"), "tune": TUNE_DIR / "mlflow_run.json",
              "evaluate": EVALUATE_DIR / "mlflow_run.json"}
STUDIES = Path("studies")  # published studies, git-tracked: one folder each (pedtune.published)
README_STUDY = STUDIES / "cpu-quick"  # the one README's Results are generated from


def from_root(path: str | Path) -> Path:
    """A relative path made absolute from the repository the stage runs for (an absolute one as it is).

    That is DVC's ``DVC_ROOT`` when DVC runs the stage, else the working directory.
    ``dvc exp run --temp`` and queued experiments run in a temporary copy of the repository,
    where DVC_ROOT still names the original: what they keep (the MLflow store, the sweep's
    resumable state) joins the original's instead of vanishing with the copy.
    """
    return (Path(os.environ.get("DVC_ROOT") or ".") / path).resolve()
