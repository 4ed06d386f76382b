"""One Ray Tune trial: the trial's overrides on the base config, trained by ``fit``, reported per epoch.

Every epoch is reported, so ``training_iteration`` equals the epoch (ASHA's time axis and the
MLflow step); every ``tune.checkpoint_every``-th report carries a checkpoint, and a trial
restored from its last checkpoint continues with the epoch after it: Ray restores the
iteration counter from the checkpoint's result.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch
from ray import tune

from pedtune.config import StudyConfig, with_train_overrides
from pedtune.data.dataset import SampleStore
from pedtune.engine.train import EpochHook, EpochResult
from pedtune.tune.space import decode_sample
from pedtune.tune.storage import linking_filesystem

CHECKPOINT_FILE = "state.pt"
# Tune's live table shows the first four metrics of a result: put the informative ones there.
LEADING_METRICS = ("bbox_mAP", "segm_mAP", "train_loss", "lr")


class FitFn(Protocol):
    """The signature of :func:`pedtune.engine.train.fit`, the training function a trial calls."""

    def __call__(
        self,
        config: StudyConfig,
        train_store: SampleStore,
        eval_store: SampleStore,
        pretrained: Mapping[str, torch.Tensor] | None = None,
        on_epoch_end: EpochHook | None = None,
        resume: Mapping[str, Any] | None = None,
    ) -> Any: ...


def save_state(state: Mapping[str, Any], folder: Path) -> None:
    torch.save(dict(state), folder / CHECKPOINT_FILE)


def load_state(file: Path | BinaryIO) -> dict[str, Any]:
    """The state in a checkpoint's ``CHECKPOINT_FILE``, given as a path or an open binary file."""
    # weights_only: a checkpoint is tensors and plain containers, never arbitrary objects.
    return torch.load(file, map_location="cpu", weights_only=True)


def report_epoch(
    result: EpochResult, state: Callable[[], dict[str, Any]], staging: Path, checkpoint_every: int = 1
) -> None:
    """Report the epoch's val metrics to Tune, every ``checkpoint_every``-th with the full training state.

    The state is saved in a fresh folder under ``staging`` (on the storage's disk), which Tune
    persists by linking its files into the trial's storage (:mod:`pedtune.tune.storage`).
    A trial resumed from an older checkpoint reports the epochs since then again; the MLflow
    callback and the trial's history keep one row per epoch.
    """
    metrics = {key: result.metrics[key] for key in LEADING_METRICS if key in result.metrics}
    metrics.update(result.metrics, epoch=result.epoch)
    if result.epoch % checkpoint_every:
        tune.report(metrics)
        return
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="epoch-", dir=staging) as folder:
        save_state(state(), Path(folder))
        # report() persists the folder into the trial's storage before it returns.
        tune.report(metrics, checkpoint=tune.Checkpoint(folder, filesystem=linking_filesystem()))


def restored_state() -> dict[str, Any] | None:
    """The state of the trial's last reported epoch when Tune restores it (resume, retry), else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    # Read in place: as_directory() would first copy a checkpoint on a non-LocalFileSystem.
    with checkpoint.filesystem.open_input_file(f"{checkpoint.path}/{CHECKPOINT_FILE}") as file:
        return load_state(file)


def train_trial(
    sample: dict[str, Any],
    *,
    base: StudyConfig,
    train_store: SampleStore,
    val_store: SampleStore,
    pretrained: Mapping[str, torch.Tensor],
    fit_fn: FitFn,
    checkpoint_staging: Path,
) -> None:
    """The Tune function trainable; the keyword arguments arrive through ``tune.with_parameters``."""
    # Ray sets OMP_NUM_THREADS for the worker, but torch may have read it before; more
    # threads than reserved cores makes two concurrent trials fight over the CPUs.
    torch.set_num_threads(max(1, int(base.tune.resources_per_trial.cpu)))
    config = with_train_overrides(base, decode_sample(sample, base.tune.search_space))
    report = functools.partial(
        report_epoch, staging=checkpoint_staging, checkpoint_every=base.tune.checkpoint_every
    )
    fit_fn(config, train_store, val_store, pretrained, on_epoch_end=report, resume=restored_state())
