"""Recorded tables built by hand: a config and scores chosen by the test, no training."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml
from study_copy import merge

from pedtune.replay.grid import Grid
from pedtune.stages.record import provenance
from pedtune.replay.table import RecordedRun, append_run
from pedtune.config import StudyConfig, validate
from pedtune.io import write_json
from pedtune.replay.table import PROVENANCE_FILE

REPO = Path(__file__).resolve().parents[2]
SMALL: dict[str, Any] = {
    "train": {"epochs": 3, "lr": 0.01, "batch_size": 2, "device": "cpu"},
    "tune": {"num_samples": 6, "max_concurrent": 1, "asha": {"grace_period": 1, "reduction_factor": 3},
             "search_space": [
                 {"param": "train.lr", "type": "loguniform", "lower": 0.0001, "upper": 0.1},
                 {"param": "train.batch_size", "type": "choice", "values": [2, 4]},
             ]},
    "record": {"levels": {"train.lr": 4}, "seeds": [0, 1]},
    "compare": {"seeds": 3},
}

# score(configuration number, seed, epoch) -> val bbox_mAP; None: the run diverged at that epoch.
ScoreFn = Callable[[int, int, int], float | None]


def small_config(changes: dict[str, Any] | None = None) -> StudyConfig:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["record"]["levels"] = {}  # replaced, not merged: the small space has no weight decay
    return validate(merge(merge(raw, deepcopy(SMALL)), deepcopy(changes or {})))


def write_table(folder: Path, config: StudyConfig, score: ScoreFn) -> Grid:
    grid = Grid.from_config(config)
    epochs = config.record.epochs or config.train.epochs
    write_json(folder / PROVENANCE_FILE, provenance(config, grid, "0" * 64, epochs))
    for seed in config.record.seeds:
        for number, overrides in enumerate(grid.configurations()):
            rows, diverged = [], None
            for epoch in range(1, epochs + 1):
                value = score(number, seed, epoch)
                if value is None:
                    diverged = epoch
                    break
                rows.append({"bbox_mAP": value, "segm_mAP": value / 2, "epoch_time_s": 1.0})
            append_run(folder, RecordedRun(number, seed, overrides, tuple(rows), diverged), grid.params)
    return grid
