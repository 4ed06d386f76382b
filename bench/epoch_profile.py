"""Where one epoch of ``fit`` goes: its wall time taken apart, and the ops that cost the device.

``fit`` (the one training path) trains ``--epochs`` epochs of the params' model, with the
per-epoch work a run does around it (``--hooks``): ``checkpoint``, the training state written
as a Tune trial writes it (started in a thread when the epoch's training ends, waited for at the
epoch's end: ``tune.trainable.EpochReporter``'s schedule, without Ray), and ``mlflow``, the train
stage's own epoch hook logging to a temporary SQLite store (left out where MLflow is not
installed, as on a bare GPU image; the result says which ran). Timestamps taken by global
module and optimizer hooks, which change nothing ``fit`` computes, split every epoch's wall
time (host clock) into:

- ``steps_s``: forward, backward and optimizer step, of which ``first_shape_steps_s`` is the
  steps whose padded batch shape this ``fit`` met for the first time (a new shape's warm-up:
  kernels, allocator, on the first epoch CUDA's own start); ``first_shape_excess_s`` is what they
  took beyond as many steps at the median of the others;
- ``data_wait_s``: the rest of the training pass: the loader (its workers' start, batches not
  ready), host-to-device copies, the loop's bookkeeping;
- ``checkpoint_start_s``, ``eval_s`` (the val pass: inference, mask RLE, COCO scoring) and
  ``epoch_end_s`` (waiting for the checkpoint, MLflow logging).

The host clock does not wait for the device: a step's last kernels can run while the next
batch is fetched. With AMP, a step whose gradients overflowed skips the optimizer (GradScaler);
its time then runs to the next step's forward and counts as step time (``skipped_optimizer_steps``).

Epoch ``--profile-epoch`` (default: the last; 0: none) runs under ``torch.profiler`` (CPU, and
CUDA on a GPU): its top ``--top`` ops by self device time and by self CPU time, kernels by
device time, and the device's busy share (kernel and copy time ÷ the epoch's wall). The
profiler slows the host, so read that epoch's wall split against an unprofiled one.

``--amp both --amp-dtype float16 bfloat16`` measures fp32, AMP fp16 and AMP bf16 one after the
other in one process (CUDA only; the project's AMP is torch's default autocast type, float16).

    python -m bench.epoch_profile                                   # light model, quick profile, CPU
    python -m bench.epoch_profile --params params.yaml --device cuda --epochs 3 --amp both
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.autograd import DeviceType
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from bench import common
from pedtune.config import StudyConfig
from pedtune.engine.train import EpochResult, fit

HOOKS = ("checkpoint", "mlflow")
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
LOADER_EVENT = "enumerate(DataLoader)"  # the label torch's DataLoader gives each batch it yields


@dataclass
class Step:
    forward_at: float
    images: int
    shape: tuple[int, int] | None = None  # the padded batch tensor's H x W
    stepped_at: float | None = None  # the optimizer's step returned (None: GradScaler skipped it)


@dataclass
class Epoch:
    number: int
    steps: list[Step] = field(default_factory=list)
    trained_at: float | None = None  # fit's on_epoch_trained hook called ...
    checkpoint_started_at: float | None = None  # ... and returned
    ended_at: float | None = None  # on_epoch_end called ...
    done_at: float | None = None  # ... and returned
    metrics: dict[str, float] = field(default_factory=dict)


class Clock:
    """Timestamps of ``fit``'s steps from global module and optimizer hooks, registered while the block runs.

    A training forward of the detector opens a step, its transform's output gives the padded
    batch shape, the optimizer's step closes it; the epoch hooks are wrapped by :meth:`hooks`."""

    def __init__(self, timer: Callable[[], float] = common.timer) -> None:
        self.timer = timer
        self.epochs: list[Epoch] = []
        self.fit_called_at = 0.0

    @contextlib.contextmanager
    def attached(self) -> Iterator["Clock"]:
        handles = [register_module_forward_pre_hook(self._forward_pre), register_module_forward_hook(self._forward),
                   register_optimizer_step_post_hook(self._stepped)]
        self.fit_called_at = self.timer()
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _current(self) -> Epoch:
        if not self.epochs or self.epochs[-1].ended_at is not None:
            self.epochs.append(Epoch(len(self.epochs) + 1))
        return self.epochs[-1]

    def _forward_pre(self, module: torch.nn.Module, args: tuple) -> None:
        if isinstance(module, GeneralizedRCNN) and module.training:
            self._current().steps.append(Step(self.timer(), len(args[0])))

    def _forward(self, module: torch.nn.Module, _args: tuple, output: Any) -> None:
        if isinstance(module, GeneralizedRCNNTransform) and module.training:
            steps = self._current().steps
            if steps:
                steps[-1].shape = tuple(int(v) for v in output[0].tensors.shape[-2:])

    def _stepped(self, _optimizer: torch.optim.Optimizer, _args: tuple, _kwargs: dict) -> None:
        steps = self._current().steps
        if steps and steps[-1].stepped_at is None:
            steps[-1].stepped_at = self.timer()

    def hooks(self, trained: Callable | None, end: Callable | None,
              after_end: Callable[[int], None] = lambda _epoch: None) -> tuple[Callable, Callable]:
        """``fit``'s on_epoch_trained and on_epoch_end: ``trained`` and ``end`` (either may be None), timed;
        ``after_end(epoch)`` runs after ``end``, outside the epoch's time."""

        def on_trained(epoch: int, training_state: Callable[[], dict[str, Any]]) -> None:
            current = self._current()
            current.trained_at = self.timer()
            if trained is not None:
                trained(epoch, training_state)
            current.checkpoint_started_at = self.timer()

        def on_end(result: EpochResult, state: Callable[[], dict[str, Any]]) -> None:
            current = self._current()
            current.ended_at, current.metrics = self.timer(), dict(result.metrics)
            if end is not None:
                end(result, state)
            current.done_at = self.timer()
            after_end(result.epoch)

        return on_trained, on_end


def split(epoch: Epoch, seen: set[tuple[int, int]], started_at: float) -> dict[str, Any]:
    """One epoch's wall time in parts (``seen``: the padded shapes met before it, updated)."""
    if epoch.trained_at is None or epoch.checkpoint_started_at is None or epoch.ended_at is None or epoch.done_at is None:
        raise RuntimeError(f"epoch {epoch.number}: fit did not call both epoch hooks")
    step_s, first, repeat, skipped = [], [], [], 0
    for index, step in enumerate(epoch.steps):
        end = step.stepped_at
        if end is None:  # no optimizer step: until the next forward, or the end of the training pass
            skipped += 1
            end = epoch.steps[index + 1].forward_at if index + 1 < len(epoch.steps) else epoch.trained_at
        seconds = end - step.forward_at
        step_s.append(seconds)
        (first if step.shape not in seen else repeat).append(seconds)
        seen.add(step.shape)
    # fit's own epoch_time_s runs from its epoch start to just before on_epoch_end.
    train_s = epoch.trained_at - started_at
    wall_s = epoch.done_at - started_at
    parts = {"steps_s": sum(step_s), "data_wait_s": train_s - sum(step_s),
             "checkpoint_start_s": epoch.checkpoint_started_at - epoch.trained_at,
             "eval_s": epoch.ended_at - epoch.checkpoint_started_at, "epoch_end_s": epoch.done_at - epoch.ended_at}
    images = sum(step.images for step in epoch.steps)
    typical = statistics.median(repeat) if repeat else None
    return {
        "epoch": epoch.number, "steps": len(epoch.steps), "images": images, "wall_s": round(wall_s, 4),
        **{name: round(value, 4) for name, value in parts.items()},
        "first_shape_steps": len(first), "first_shape_steps_s": round(sum(first), 4),
        "first_shape_excess_s": None if typical is None else round(sum(first) - typical * len(first), 4),
        "median_repeat_step_s": None if typical is None else round(typical, 4),
        "skipped_optimizer_steps": skipped,
        "step_images_per_s": round(images / sum(step_s), 3) if step_s else None,
        "train_images_per_s": round(images / train_s, 3),
        "epoch_images_per_s": round(images / wall_s, 3),
        "epoch_vs_step": round(sum(step_s) / wall_s, 4),  # the two rates' ratio: steps' share of the wall
        "eval_share": round(parts["eval_s"] / wall_s, 4),
        "fit_epoch_time_s": round(epoch.metrics["epoch_time_s"], 4), "fit_eval_time_s": round(epoch.metrics["eval_time_s"], 4),
    }


def epoch_splits(clock: Clock) -> list[dict[str, Any]]:
    """Every epoch's :func:`split`. An epoch starts where fit starts its clock: ``epoch_time_s``
    before on_epoch_end is called (the first one after fit's setup, whose time is ``setup_s``)."""
    seen: set[tuple[int, int]] = set()
    out = []
    for epoch in clock.epochs:
        assert epoch.ended_at is not None
        started_at = epoch.ended_at - epoch.metrics["epoch_time_s"]
        row = split(epoch, seen, started_at)
        if epoch.number == 1:
            row["setup_s"] = round(started_at - clock.fit_called_at, 4)
        out.append(row)
    return out


class Profiled:
    """``torch.profiler`` over one epoch, started and stopped from the epoch hooks."""

    def __init__(self, epoch: int, device: str, top: int, timer: Callable[[], float] = common.timer) -> None:
        self.epoch, self.device, self.top, self.timer = epoch, device, top, timer
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.activities = [a.name for a in activities]
        self._profiler = torch.profiler.profile(activities=activities)
        self._started_at: float | None = None
        self._wall_s: float | None = None

    def start(self) -> None:
        self._started_at = self.timer()
        self._profiler.start()

    def stop(self) -> None:
        common.sync(self.device)
        self._profiler.stop()
        assert self._started_at is not None
        self._wall_s = self.timer() - self._started_at

    def after_epoch(self, epoch: int) -> None:
        """Hook for the end of every epoch: start before the profiled one, stop after it."""
        if epoch == self.epoch - 1:
            self.start()
        elif epoch == self.epoch:
            self.stop()

    def summary(self) -> dict[str, Any]:
        """Top ops by self device and self CPU time, kernels by device time, the device's busy share."""
        if self._wall_s is None:
            raise RuntimeError(f"epoch {self.epoch} was not profiled: fit trained fewer epochs")
        averages = self._profiler.key_averages()
        ops = [e for e in averages if e.device_type == DeviceType.CPU]
        kernels = [e for e in averages if e.device_type != DeviceType.CPU]
        device_us = sum(e.self_device_time_total for e in kernels)
        out: dict[str, Any] = {
            "epoch": self.epoch, "activities": self.activities, "wall_s": round(self._wall_s, 4),
            "loader_next_s": round(sum(e.cpu_time_total for e in ops if e.key.startswith(LOADER_EVENT)) / 1e6, 4),
            "top_ops_by_self_cpu_time": _top(ops, "self_cpu_time_total", self.top),
        }
        if self.device == "cuda":
            out["device_busy_share"] = round(device_us / 1e6 / self._wall_s, 4)
            out["device_time_s"] = round(device_us / 1e6, 4)
            out["top_ops_by_self_device_time"] = _top(ops, "self_device_time_total", self.top)
            out["top_kernels_by_device_time"] = _top(kernels, "self_device_time_total", self.top)
        return out


def _top(events: list[Any], key: str, count: int) -> list[dict[str, Any]]:
    ranked = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:count]
    return [{"name": e.key, "calls": e.count, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4),
             "self_device_s": round(e.self_device_time_total / 1e6, 4)} for e in ranked if getattr(e, key) > 0]


class CheckpointWriter:
    """The training state written as a Tune trial writes it: from the end of the epoch's training,
    in one background thread, waited for (with the history written after it) at the epoch's end."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future[None] | None = None

    def trained(self, epoch: int, training_state: Callable[[], dict[str, Any]]) -> None:
        self._pending = self._writer.submit(torch.save, training_state(), self._folder / f"state-{epoch}.pt")

    def end(self, result: EpochResult, state: Callable[[], dict[str, Any]]) -> None:
        assert self._pending is not None
        self._pending.result()
        torch.save(state()["history"], self._folder / f"history-{result.epoch}.pt")
        for path in self._folder.glob(f"*-{result.epoch}.pt"):
            path.unlink()

    def close(self) -> None:
        self._writer.shutdown(wait=True)


@contextlib.contextmanager
def epoch_hooks(names: list[str], folder: Path) -> Iterator[tuple[Callable | None, Callable | None, list[str]]]:
    """(on_epoch_trained, on_epoch_end, the hooks that run) for ``names``; MLflow's only where it is installed."""
    checkpoint = CheckpointWriter(folder) if "checkpoint" in names else None
    ran = ["checkpoint"] if checkpoint else []
    loggers: list[Callable] = []
    with contextlib.ExitStack() as stack:
        if "mlflow" in names:
            try:
                from pedtune.config.schema import MlflowConfig
                from pedtune.stages.train import mlflow_epoch_hook
                from pedtune.tracking.store import open_store, tracked_run
            except ImportError as error:
                common.log(f"--hooks mlflow: left out ({error})")
            else:
                store = open_store(MlflowConfig(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
                                                artifact_location=(folder / "artifacts").as_uri(), experiment="epoch_profile"))
                run_id = stack.enter_context(tracked_run(store, "epoch_profile"))
                loggers.append(mlflow_epoch_hook(store, run_id))
                ran.append("mlflow")
        if checkpoint is not None:
            stack.callback(checkpoint.close)

        def end(result: EpochResult, state: Callable[[], dict[str, Any]]) -> None:
            if checkpoint is not None:
                checkpoint.end(result, state)
            for logger in loggers:
                logger(result, state)

        yield (checkpoint.trained if checkpoint else None), (end if ran else None), ran


def precisions(args: argparse.Namespace) -> list[tuple[bool, str | None]]:
    """(amp, autocast dtype) per run: fp32 and/or AMP in each of ``--amp-dtype`` (CUDA only)."""
    return [(amp, dtype) for amp in common.amp_modes(args) for dtype in (args.amp_dtype if amp else [None])]


@contextlib.contextmanager
def autocast_dtype(device: str, dtype: str | None) -> Iterator[None]:
    """fit's ``torch.autocast`` (no dtype given) uses the process's default for the device: set it for the block."""
    if dtype is None:
        yield
        return
    before = torch.get_autocast_dtype(device)
    torch.set_autocast_dtype(device, AMP_DTYPES[dtype])
    try:
        yield
    finally:
        torch.set_autocast_dtype(device, before)


def one_run(args: argparse.Namespace, root: Path, amp: bool, dtype: str | None) -> dict[str, Any]:
    changes: dict[str, Any] = {"train": {"epochs": args.epochs, "amp": amp}, "tune": {"scheduler": "fifo"}}
    if args.arch:
        changes["model"] = {"arch": common.ARCHS[args.arch]}
    config: StudyConfig = common.study_config(args, changes)
    train_samples, val_samples = common.sample_sets(root, config)
    if args.train_images:
        train_samples.stems = train_samples.stems[: args.train_images]
    if args.val_images:
        val_samples.stems = val_samples.stems[: args.val_images]
    pretrained = common.pseudo_pretrained(config, common.batches(train_samples, 2, 2))
    profile_epoch = args.epochs if args.profile_epoch is None else args.profile_epoch
    profiled = Profiled(profile_epoch, args.device, args.top) if profile_epoch else None
    precision = f"AMP {dtype}" if amp else "fp32"
    common.log(f"{config.model.arch}, {precision}: {args.epochs} epochs of {len(train_samples)} train / "
               f"{len(val_samples)} val images" + (f", epoch {profile_epoch} profiled" if profiled else ""))
    clock = Clock()
    folder = Path(tempfile.mkdtemp(prefix="pedtune-epoch-profile-"))
    try:
        with epoch_hooks(args.hooks, folder) as (trained, end, ran), autocast_dtype(args.device, dtype):
            on_trained, on_end = clock.hooks(trained, end, profiled.after_epoch if profiled else lambda _epoch: None)
            if profiled and profile_epoch == 1:
                profiled.start()  # before fit: the profile of epoch 1 holds fit's setup too
            with clock.attached():
                fit(config, train_samples, val_samples, pretrained, on_epoch_end=on_end, on_epoch_trained=on_trained)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    epochs = epoch_splits(clock)
    for row in epochs:
        common.log(f"epoch {row['epoch']}: {row['wall_s']:.1f} s = steps {row['steps_s']:.1f} (first shapes "
                   f"{row['first_shape_steps_s']:.1f}) + data wait {row['data_wait_s']:.1f} + val {row['eval_s']:.1f} + "
                   f"hooks {row['checkpoint_start_s'] + row['epoch_end_s']:.2f}; step {row['step_images_per_s']} img/s, "
                   f"epoch {row['epoch_images_per_s']} img/s")
    return {
        "arch": config.model.arch, "amp": amp, "amp_dtype": dtype, "precision": precision,
        "image_size": [config.model.min_size, config.model.max_size], "batch_size": config.train.batch_size,
        "eval_batch_size": config.train.eval_batch_size, "num_workers": config.data.num_workers,
        "train_images": len(train_samples), "val_images": len(val_samples), "hooks": ran,
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "epochs": epochs,
        "profile": profiled.summary() if profiled else None,
    }


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--arch", choices=tuple(common.ARCHS), default=None, help="default: the params file's model")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--profile-epoch", type=int, default=None, help="the epoch run under torch.profiler "
                   "(default: the last; 0: none)")
    p.add_argument("--top", type=int, default=15, help="ops listed per ranking")
    p.add_argument("--train-images", type=int, default=None, help="train on the first N of the split (default: all)")
    p.add_argument("--val-images", type=int, default=None, help="evaluate on the first N of the split (default: all)")
    p.add_argument("--hooks", nargs="*", choices=HOOKS, default=list(HOOKS), help="the per-epoch work around fit")
    p.add_argument("--amp-dtype", nargs="+", choices=tuple(AMP_DTYPES), default=["float16"],
                   help="autocast types to run with AMP on (CUDA only)")
    args = p.parse_args(argv)
    if args.epochs < 1 or not 0 <= (args.profile_epoch or 0) <= args.epochs:
        p.error(f"--epochs {args.epochs} --profile-epoch {args.profile_epoch}: need epochs >= 1 and 0 <= profile epoch <= epochs")
    common.setup(args)
    runs: list[dict[str, Any]] = []
    with common.dataset(args) as root:
        for amp, dtype in precisions(args):
            runs.append(one_run(args, root, amp, dtype))
            # Written after each run too, so a run stopped from outside keeps what it measured.
            if args.json:
                common.emit("epoch_profile", args, {"runs": runs}, echo=False)
    return common.emit("epoch_profile", args, {"runs": runs})


if __name__ == "__main__":
    main()
