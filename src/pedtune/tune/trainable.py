"""One Ray Tune trial: the trial's overrides on the base config, trained by ``fit``, reported per epoch.

Every epoch is reported, so ``training_iteration`` equals the epoch (ASHA's time axis and the
MLflow step); every ``tune.checkpoint_every``-th report carries a checkpoint, and a trial
restored from its last checkpoint continues with the epoch after it: Ray restores the
iteration counter from the checkpoint's result.

A checkpoint's training state is written in a background thread while ``fit`` evaluates the
epoch (the weights do not change then), so the trial does not wait for the disk
(docs/performance.md); the report itself still
comes after the evaluation, with the checkpoint complete.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow.fs
import torch
from ray import tune

from pedtune import console
from pedtune.config import StudyConfig, with_train_overrides
from pedtune.data.dataset import SampleSet
from pedtune.engine.train import EpochHook, EpochResult, TrainedHook
from pedtune.run_limits import Grant, place_run, ray_grant
from pedtune.tune.space import decode_sample
from pedtune.tune.storage import linking_filesystem

# A checkpoint folder holds the training state (weights, optimizer, schedules; written while the
# epoch is evaluated) and, once evaluated, the history of the epochs' metrics.
CHECKPOINT_FILE = "state.pt"
HISTORY_FILE = "history.pt"
# Tune's live table shows the first four metrics of a result: put the informative ones there.
LEADING_METRICS = ("bbox_mAP", "segm_mAP", "train_loss", "lr")


class FitFn(Protocol):
    """The signature of :func:`pedtune.engine.train.fit`, the training function a trial calls."""

    def __call__(
        self,
        config: StudyConfig,
        train_samples: SampleSet,
        eval_samples: SampleSet,
        pretrained: Mapping[str, torch.Tensor] | None = None,
        on_epoch_end: EpochHook | None = None,
        resume: Mapping[str, Any] | None = None,
        on_epoch_trained: TrainedHook | None = None,
    ) -> Any: ...


def _load(file: BinaryIO) -> Any:
    # weights_only: a checkpoint is tensors and plain containers, never arbitrary objects.
    return torch.load(file, map_location="cpu", weights_only=True)


def load_state(folder: str | Path, filesystem: pyarrow.fs.FileSystem | None = None) -> dict[str, Any]:
    """The full state saved in a checkpoint folder (``fit``'s ``resume``), read in place from its filesystem."""
    filesystem = filesystem or pyarrow.fs.LocalFileSystem()
    with filesystem.open_input_file(f"{folder}/{CHECKPOINT_FILE}") as file:
        state = _load(file)
    history = f"{folder}/{HISTORY_FILE}"
    if filesystem.get_file_info(history).type == pyarrow.fs.FileType.NotFound:
        return state  # written before the history had a file of its own: state.pt holds it
    with filesystem.open_input_file(history) as file:
        return {**state, "history": _load(file)}


class EpochReporter:
    """``fit``'s hooks in a trial: report every epoch to Tune, every ``checkpoint_every``-th with a checkpoint.

    The checkpoint's training state is written by one background thread from the moment the
    epoch's training ends (:meth:`epoch_trained`) and waited for when the evaluated epoch is
    reported (:meth:`__call__`), in a fresh folder under ``staging`` (on the storage's disk)
    that Tune persists by linking its files into the trial's storage
    (:mod:`pedtune.tune.storage`); with ``staging`` None (an object store), in a temporary
    folder on the trial's node that Tune uploads. A trial resumed from an older checkpoint reports the epochs
    since then again; the MLflow callback and the trial's history keep one row per epoch.
    Call :meth:`close` when ``fit`` ends, also by an error.
    """

    def __init__(self, staging: Path | None, checkpoint_every: int = 1) -> None:
        self._staging = staging
        self._checkpoint_every = checkpoint_every
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: tuple[int, Path, Future[None]] | None = None

    def epoch_trained(self, epoch: int, training_state: Callable[[], dict[str, Any]]) -> None:
        if epoch % self._checkpoint_every:
            return
        self._discard_pending()  # only if fit skipped the previous report, which it does not
        if self._staging is not None:
            self._staging.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"epoch-{epoch}-", dir=self._staging))
        # The state's references are taken here, in the training thread; fit changes none of
        # the tensors until this epoch's report returns.
        written = self._writer.submit(torch.save, training_state(), folder / CHECKPOINT_FILE)
        self._pending = epoch, folder, written

    def __call__(self, result: EpochResult, state: Callable[[], dict[str, Any]]) -> None:
        metrics = {key: result.metrics[key] for key in LEADING_METRICS if key in result.metrics}
        metrics.update(result.metrics, epoch=result.epoch)
        if result.epoch % self._checkpoint_every:
            tune.report(metrics)
            return
        if self._pending is None or self._pending[0] != result.epoch:
            # A fit without the on_epoch_trained hook: write the state now.
            self.epoch_trained(result.epoch, state)
        assert self._pending is not None
        _, folder, written = self._pending
        self._pending = None
        try:
            written.result()  # a failed write (disk full) raises here, in the trial
            torch.save(state()["history"], folder / HISTORY_FILE)
            # report() persists the folder into the trial's storage before it returns.
            filesystem = linking_filesystem() if self._staging is not None else pyarrow.fs.LocalFileSystem()
            tune.report(metrics, checkpoint=tune.Checkpoint(str(folder), filesystem=filesystem))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Wait for a checkpoint still being written (fit failed while evaluating) and delete it."""
        self._discard_pending()
        self._writer.shutdown(wait=True)

    def _discard_pending(self) -> None:
        if self._pending is None:
            return
        _, folder, written = self._pending
        self._pending = None
        written.exception()  # waits; the write's own error does not matter once it is discarded
        shutil.rmtree(folder, ignore_errors=True)


def restored_state() -> dict[str, Any] | None:
    """The state of the trial's last reported epoch when Tune restores it (resume, retry), else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    # Read in place: as_directory() would first copy a checkpoint on a non-LocalFileSystem.
    return load_state(checkpoint.path, checkpoint.filesystem)


def train_trial(
    sample: dict[str, Any],
    *,
    base: StudyConfig,
    train_samples: SampleSet,
    val_samples: SampleSet,
    pretrained: Mapping[str, torch.Tensor],
    fit_fn: FitFn,
    checkpoint_staging: Path | None,
) -> None:
    """The Tune function trainable; the keyword arguments arrive through ``tune.with_parameters``."""
    console.configure("tune")  # progress lines into the trial's log, prefixed as on the driver
    # torch's threads come from train.threads, not from Ray's OMP_NUM_THREADS (the count changes
    # the figures); a reused actor holds the previous trial's memory; a trial granted no GPU
    # still sees the GPUs: place_run.
    resources = base.tune.resources_per_trial
    grant = ray_grant() or Grant(gpu=resources.gpu)
    config = place_run(with_train_overrides(base, decode_sample(sample, base.tune.search_space)), grant)
    reporter = EpochReporter(checkpoint_staging, base.tune.checkpoint_every)
    try:
        fit_fn(config, train_samples, val_samples, pretrained, on_epoch_end=reporter, resume=restored_state(),
               on_epoch_trained=reporter.epoch_trained)
    finally:
        reporter.close()
