"""Where each stage reads and writes, relative to the repository root (the files dvc.yaml declares)."""

from pathlib import Path

DATA_ROOT = Path("data/PennFudanPed")
DATA_DOWNLOADS = Path("data/downloads")  # kept between runs so a re-fetch needs no re-download
SPLIT_FILE = Path("data/split.json")
PRETRAINED = Path("models/pretrained.pt")
TRAINED_MODEL = Path("models/model.pt")
TRAIN_METRICS = Path("metrics/train.json")
TRAIN_HISTORY = Path("plots/train/history.csv")
TUNE_DIR = Path("results/tune")
TUNE_METRICS = Path("metrics/tune.json")
EVALUATE_DIR = Path("results/evaluate")
EVALUATE_METRICS = Path("metrics/evaluate.json")
