"""A throw-away copy of the study (its own git repo, DVC and MLflow store) on tiny synthetic data."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"source": "synthetic", "num_workers": 0,
             "synthetic": {"num_images": 12, "height": 64, "width": 80, "max_instances": 2}},
    "model": {"arch": "maskrcnn_mobilenet_v3_large_fpn", "weights": "none", "min_size": 64, "max_size": 96,
              "detections_per_img": 10, "box_batch_size_per_image": 64},
    "train": {"epochs": 2, "warmup_epochs": 0.5, "device": "cpu"},
    "tune": {"num_samples": 3, "max_concurrent": 2, "resources_per_trial": {"cpu": 1, "gpu": 0},
             "asha": {"grace_period": 1}},
    "evaluate": {"seeds": [1, 2], "epochs": 1, "num_pictures": 2},
}

# Issue 31: a published study folder (``pedtune publish``'s studies/NAME/) stays under 1 MB.
PUBLISHED_STUDY_MAX_BYTES = 1_000_000


def folder_bytes(folder: Path) -> int:
    """The size of every file under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_study(root: Path, changes: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    # dvc.yaml lists the code as deps; the package itself runs from the installed checkout.
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    # A deep copy: merging into TINY itself would carry one test's changes into the next.
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), merge(copy.deepcopy(TINY), changes or {}))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.email=ci@pedtune", "-c", "user.name=ci", "commit", "-qm", "study"], root)
    return root
