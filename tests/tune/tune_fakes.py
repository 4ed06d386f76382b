"""A cheap stand-in for ``fit`` with the same signature and hook protocol, for driver tests.

The score peaks at lr = 0.01 and grows with the epoch, so ASHA has a clear loser to stop;
lr >= 1 diverges like a real run would; lr = 0.5 kills the worker process. ``PEDTUNE_FAKE_EPOCH_S`` slows each epoch down so a
test can interrupt a sweep mid-trial. ``PEDTUNE_FAKE_HOLD`` names a file: while it exists and holds N, every trial waits
before its epoch N + 1, so a test can interrupt a sweep at a known epoch however loaded the machine is (a worker node
gets it from its own environment: a driver's does not reach the trials on other nodes).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pedtune.config import StudyConfig
from pedtune.engine.train import EpochHook, EpochResult, TrainedHook
from pedtune.errors import NonFiniteLossError
from pedtune.tune.trainable import CHECKPOINT_FILE, HISTORY_FILE

DELAY_ENV = "PEDTUNE_FAKE_EPOCH_S"
HOLD_ENV = "PEDTUNE_FAKE_HOLD"
WORKER_DIES_LR = 0.5


def save_state(state: Mapping[str, Any], folder: Path) -> None:
    """Write a full state (as ``fit`` hands its ``on_epoch_end`` hook) as a trial's checkpoint folder
    holds it, in one go (a trial writes the two files at different moments: EpochReporter)."""
    training_state = dict(state)
    history = training_state.pop("history")
    torch.save(training_state, folder / CHECKPOINT_FILE)
    torch.save(history, folder / HISTORY_FILE)


def hold(path: Path, after_epoch: int) -> None:
    """Make every trial wait before its epoch ``after_epoch`` + 1 until :func:`release`."""
    staged = path.with_suffix(".staged")
    staged.write_text(str(after_epoch))
    staged.replace(path)  # whole, so a trial never reads half of it


def release(path: Path) -> None:
    path.unlink(missing_ok=True)


def wait_while_held(epoch: int) -> None:
    if not (hold_file := os.environ.get(HOLD_ENV)):
        return
    while True:
        try:
            if epoch <= int(Path(hold_file).read_text()):
                return
        except FileNotFoundError:  # released
            return
        time.sleep(0.2)


def fake_score(lr: float, epoch: int, epochs: int) -> float:
    return epoch / epochs * math.exp(-((math.log10(lr) + 2) ** 2))


def fake_fit(
    config: StudyConfig,
    train_samples: Any,
    eval_samples: Any,
    pretrained: Mapping[str, torch.Tensor] | None = None,
    on_epoch_end: EpochHook | None = None,
    resume: Mapping[str, Any] | None = None,
    on_epoch_trained: TrainedHook | None = None,
) -> None:
    cfg = config.train
    history = [dict(h) for h in resume["history"]] if resume else []
    first = int(resume["epoch"]) + 1 if resume else 1
    for epoch in range(first, cfg.epochs + 1):
        wait_while_held(epoch)
        time.sleep(float(os.environ.get(DELAY_ENV, "0")))
        if cfg.lr >= 1:
            raise NonFiniteLossError(epoch, 1, {"loss_mask": math.nan})
        if cfg.lr == WORKER_DIES_LR:
            os._exit(137)  # the worker process dies, as when the kernel kills it for memory
        weights = {"weight": torch.full((2,), float(epoch))}
        if on_epoch_trained is not None:
            on_epoch_trained(epoch, lambda epoch=epoch: {"epoch": epoch, "model": weights})
        score = fake_score(cfg.lr, epoch, cfg.epochs)
        metrics = {"bbox_mAP": score, "segm_mAP": score / 2, "train_loss": 1 / epoch,
                   "resumed_from": float(resume["epoch"]) if resume else 0.0}
        history.append(metrics)

        def state(epoch: int = epoch) -> dict[str, Any]:
            return {"epoch": epoch, "history": history, "model": weights}

        if on_epoch_end is not None:
            on_epoch_end(EpochResult(epoch, metrics), state)
