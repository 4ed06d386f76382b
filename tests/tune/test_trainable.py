"""A trial's checkpoint: the state fit hands to its hook survives a weights-only save and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tune_fakes import save_state
from tune_study import build_study

from pedtune import paths
from pedtune.data.dataset import open_samples
from pedtune.data.split import read_split
from pedtune.engine.train import EpochResult, fit
from pedtune.tune.trainable import load_state

pytestmark = pytest.mark.slow


def test_a_run_resumed_from_a_saved_epoch_continues_as_if_never_stopped(study: Path):
    torch.set_num_threads(1)  # the CPUs are shared: more threads only contend
    config = build_study(study)
    split, _ = read_split(paths.SPLIT_FILE)
    size = (config.model.min_size, config.model.max_size)
    train = open_samples(paths.DATA_ROOT, split.train, *size, True, "")
    val = open_samples(paths.DATA_ROOT, split.val, *size, True, "")
    folder = study / "checkpoint"
    folder.mkdir()

    def keep_first_epoch(result: EpochResult, state: Any) -> None:
        if result.epoch == 1:
            save_state(state(), folder)

    uninterrupted = fit(config, train, val, on_epoch_end=keep_first_epoch)
    state = load_state(folder)
    assert state["epoch"] == 1 and len(state["history"]) == 1

    resumed = fit(config, train, val, resume=state)
    assert len(resumed.history) == 2
    assert resumed.history[0] == uninterrupted.history[0]
    assert resumed.history[1]["train_loss"] == pytest.approx(uninterrupted.history[1]["train_loss"], rel=1e-4)
    assert resumed.history[1]["lr"] == pytest.approx(uninterrupted.history[1]["lr"])
