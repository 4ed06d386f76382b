"""Ray Tune overhead: a sweep's wall time versus the ideal (sum of trial compute / concurrency),
and the time from ``ray.init`` to the first trial running.

The sweep goes through the project's driver (``pedtune.stages.tune._run_sweep``: its
``ray.init`` settings, ``tune.with_parameters`` payload, resources, searcher, scheduler,
``reuse_actors``, per-epoch checkpoints, and by default its MLflow callback on a throw-away
SQLite store) with a training function that sleeps ``--epoch-s`` per epoch and reports every
epoch through the real hooks (``EpochReporter``: a checkpoint per epoch, written while the
last ``--eval-share`` of the epoch, its evaluation, sleeps).
The payload is the real one: the decoded train/val stores and a model state dict.

Checkpoint sizes alternate: ``tiny`` (Ray's own overhead), ``light`` and ``r50`` (the size of
that model's real checkpoint: weights + SGD momentum).

    python -m bench.tune_overhead                       # 6 trials x 3 epochs x 2 s, 2 at a time
    python -m bench.tune_overhead --epoch-s 10 --reps 1
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
import ray.cloudpickle
import torch

from bench import common
from pedtune.config import StudyConfig
from pedtune.engine.train import EpochHook, EpochResult, TrainedHook
from pedtune.model.factory import build_model


def process_started() -> float:
    """When this process started, on ``time.time()``'s clock, to a clock tick.

    Not psutil's ``create_time`` where Linux's /proc is there: it adds the start tick to the boot
    time, which Linux gives in whole seconds, so it lies up to a second before the true start.
    Elsewhere (macOS) psutil's is the clock there is.
    """
    if not Path("/proc/self/stat").exists():
        import psutil

        return psutil.Process().create_time()
    after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start_s = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime: ticks since boot
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - start_s)


class SleepFit:
    """A ``fit`` stand-in: sleeps per epoch (no CPU use, so only the overhead competes for cores)."""

    def __init__(self, epoch_s: float, state_mb: float, log_dir: str, eval_share: float = 0.0) -> None:
        self.epoch_s, self.state_mb, self.log_dir, self.eval_share = epoch_s, state_mb, log_dir, eval_share

    def _log(self, path: Path, **event: Any) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps({"t": time.time(), **event}) + "\n")

    def __call__(self, config: StudyConfig, train_samples: Any, eval_samples: Any,
                 pretrained: Mapping[str, torch.Tensor] | None = None, on_epoch_end: EpochHook | None = None,
                 resume: Mapping[str, Any] | None = None, on_epoch_trained: TrainedHook | None = None) -> None:
        log = Path(self.log_dir) / f"{uuid.uuid4().hex}.jsonl"
        # The worker's start time separates Ray's scheduling from the worker's own start-up.
        self._log(log, event="start", pid=os.getpid(), process_created=process_started())
        weights = torch.zeros(max(1, int(self.state_mb * 2**20 / 4)))
        history: list[dict[str, float]] = []
        cfg = config.train
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            time.sleep(self.epoch_s * (1 - self.eval_share))  # training
            compute = time.perf_counter() - start
            if on_epoch_trained is not None:
                on_epoch_trained(epoch, lambda: {"epoch": epoch, "model": {"weights": weights}})
            start = time.perf_counter()
            time.sleep(self.epoch_s * self.eval_share)  # evaluation, while the checkpoint is written
            compute += time.perf_counter() - start
            # A score with a clear optimum (lr 0.01), growing with the epoch, so ASHA has losers.
            score = epoch / cfg.epochs * math.exp(-((math.log10(cfg.lr) + 2) ** 2))
            metrics = {"bbox_mAP": score, "segm_mAP": score / 2, "train_loss": 1 / epoch, "lr": cfg.lr,
                       "epoch_time_s": compute, "eval_time_s": self.epoch_s * self.eval_share}
            history.append(metrics)
            self._log(log, event="epoch", compute_s=compute)
            reported = time.perf_counter()
            if on_epoch_end is not None:
                on_epoch_end(EpochResult(epoch, metrics),
                             lambda: {"epoch": epoch, "model": {"weights": weights}, "history": history})
            self._log(log, event="reported", report_s=time.perf_counter() - reported)


# Ray workers import this module's code by value: they need not find the bench folder.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def checkpoint_mb(config: StudyConfig) -> float:
    """Weights, buffers and SGD momentum of the model as the trial fine-tunes it."""
    model = build_model(config.model, build_model(config.model).state_dict())
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    total += sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return total / 2**20


def events(log_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in log_dir.glob("*.jsonl") for line in path.read_text().splitlines()]


@contextlib.contextmanager
def clocked_ray(marks: dict[str, float]):
    """Record when the driver calls ray.init / ray.shutdown, and when they return."""
    from ray import tune

    init, shutdown, fit = ray.init, ray.shutdown, tune.Tuner.fit

    def timed_init(*args: Any, **kwargs: Any) -> Any:
        marks["init_called"] = time.time()
        try:
            return init(*args, **kwargs)
        finally:
            marks["init_returned"] = time.time()

    def timed_shutdown(*args: Any, **kwargs: Any) -> Any:
        marks["shutdown_called"] = time.time()
        return shutdown(*args, **kwargs)

    def timed_fit(self: Any) -> Any:
        marks["tuner_fit_called"] = time.time()
        return fit(self)

    ray.init, ray.shutdown, tune.Tuner.fit = timed_init, timed_shutdown, timed_fit
    try:
        yield
    finally:
        ray.init, ray.shutdown, tune.Tuner.fit = init, shutdown, fit


def sweep(config: StudyConfig, stores: tuple, pretrained: dict, fit_fn: SleepFit, workdir: Path,
          mlflow: bool) -> dict[str, float]:
    """One sweep through the driver; returns its wall times."""
    from ray import tune

    from pedtune.config.schema import MlflowConfig
    from pedtune.tracking.store import open_store
    from pedtune.tracking.sweep import SweepLoggerCallback, sweep_run

    sid = uuid.uuid4().hex[:8]
    experiment_dir = workdir / f"sweep-{sid}"
    marks: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        if mlflow:
            store = open_store(MlflowConfig(tracking_uri=f"sqlite:///{workdir}/mlflow.db",
                                            artifact_location=str(workdir / "artifacts"), experiment="bench"))
            stack.enter_context(sweep_run(store, sid, f"bench sweep-{sid}", {}, {}))
            callback = SweepLoggerCallback(store, sid, config.tune.search_space, config.tune.metric)
        else:
            callback = tune.Callback()
        stack.enter_context(clocked_ray(marks))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # Tune's progress table
        grid = common.driver_sweep(config, experiment_dir, stores, pretrained, fit_fn, callback)
        marks["done"] = time.time()
    errors = [r.error for r in grid if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} trials failed: {errors[0]}")
    return marks


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epoch-s", type=float, default=2.0, help="sleep per epoch (the trial's 'compute')")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo",
                   help="fifo: every trial runs every epoch, so the ideal does not hinge on ASHA's choices")
    p.add_argument("--grace", type=int, default=None, help="ASHA grace period (default: the quick profile's)")
    p.add_argument("--reduction", type=int, default=None, help="ASHA reduction factor (default: the quick profile's)")
    p.add_argument("--states", nargs="+", choices=("tiny", "light", "r50"), default=["tiny", "light"],
                   help="checkpoint sizes: none, the light model's, ResNet-50's (params.yaml's model)")
    p.add_argument("--reps", type=int, default=2, help="alternating repetitions of the checkpoint sizes")
    p.add_argument("--no-mlflow", action="store_true", help="leave out the driver's MLflow callback")
    p.add_argument("--checkpoint-every", type=int, default=1, help="tune.checkpoint_every (epochs)")
    p.add_argument("--eval-share", type=float, nargs="+", default=[0.035],
                   help="the part of each epoch that is its evaluation, during which the checkpoint is written "
                        "(default: evaluation's measured 3.5 %% of a quick-profile CPU epoch; 0.28 on the H200; "
                        "0: written after the epoch, as before); several alternate like --states")
    args = p.parse_args(argv)
    common.setup(args)
    resources = {"cpu": max(1, (os.cpu_count() or 2) // args.concurrency) if args.device == "cpu" else 1,
                 "gpu": 1 / args.concurrency if args.device == "cuda" else 0}
    config = common.study_config(args, {
        "train": {"epochs": args.epochs},
        "tune": {"num_samples": args.trials, "max_concurrent": args.concurrency, "scheduler": args.scheduler,
                 "checkpoint_every": args.checkpoint_every,
                 "resources_per_trial": resources,
                 "asha": {k: v for k, v in (("grace_period", args.grace), ("reduction_factor", args.reduction)) if v}},
    })
    runs = []
    with common.dataset(args) as root, tempfile.TemporaryDirectory(prefix="pedtune-bench-tune-") as tmp:
        stores = common.sample_sets(root, config)
        pretrained = build_model(config.model).state_dict()
        sizes = {"tiny": 0.0}
        for state in set(args.states) - {"tiny"}:
            sizes[state] = checkpoint_mb(common.study_config(args, {"model": {"arch": common.ARCHS[state]}}))
        for rep in range(args.reps):
            variants = [(state, share) for state in args.states for share in args.eval_share]
            for state, share in variants if rep % 2 == 0 else variants[::-1]:
                workdir = Path(tmp) / f"{state}-{share:g}-{rep}"
                (workdir / "logs").mkdir(parents=True)
                fit_fn = SleepFit(args.epoch_s, sizes[state], str(workdir / "logs"), share)
                marks = sweep(config, stores, pretrained, fit_fn, workdir, not args.no_mlflow)
                log = events(workdir / "logs")
                compute = sum(e["compute_s"] for e in log if e["event"] == "epoch")
                starts = sorted((e for e in log if e["event"] == "start"), key=lambda e: e["t"])
                first = starts[0]["t"]
                wall = marks["shutdown_called"] - marks["init_called"]
                ideal = compute / args.concurrency
                run = {
                    "state": state, "checkpoint_mb": round(sizes[state], 1), "eval_share": share, "rep": rep,
                    "trial_epochs": sum(e["event"] == "epoch" for e in log),
                    "sweep_wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "ratio_wall_vs_ideal": round(wall / ideal, 3),
                    "ray_init_s": round(marks["init_returned"] - marks["init_called"], 2),
                    "init_to_first_trial_s": round(first - marks["init_called"], 2),
                    # Where that time goes: ray.init; the driver's set-up until Tuner.fit (payload
                    # into the object store, searcher); Tune until the first worker process
                    # exists; the worker's own start (imports, payload) until fit_fn runs.
                    "startup_breakdown_s": {
                        "ray_init": round(marks["init_returned"] - marks["init_called"], 2),
                        "until_tuner_fit": round(marks["tuner_fit_called"] - marks["init_returned"], 2),
                        "until_worker_process": round(starts[0]["process_created"] - marks["tuner_fit_called"], 2),
                        "worker_start_to_fit_fn": round(first - starts[0]["process_created"], 2),
                    },
                    "worker_processes": len({e["pid"] for e in starts}),
                    "shutdown_s": round(marks["done"] - marks["shutdown_called"], 2),
                    # What each trial adds beyond its compute once Ray is up (start, reports, checkpoints, end).
                    "overhead_per_trial_s": round((wall - (first - marks["init_called"]) - ideal) * args.concurrency / args.trials, 2),
                    "report_s_per_epoch": common.stats([e["report_s"] for e in log if e["event"] == "reported"]),
                }
                common.log(f"{state} checkpoint ({run['checkpoint_mb']} MB, evaluation {100 * share:g} %): wall {wall:.1f} s vs ideal {ideal:.1f} s "
                           f"({run['ratio_wall_vs_ideal']:.2f}x), init->first trial {run['init_to_first_trial_s']:.1f} s, "
                           f"report {run['report_s_per_epoch']['median']:.2f} s/epoch")
                runs.append(run)
    return common.emit("tune_overhead", args, {
        "trials": args.trials, "epochs": args.epochs, "epoch_s": args.epoch_s, "concurrency": args.concurrency,
        "scheduler": args.scheduler, "checkpoint_every": args.checkpoint_every, "asha": config.tune.asha.model_dump(), "searcher": config.tune.searcher, "mlflow_callback": not args.no_mlflow,
        "resources_per_trial": resources, "runs": runs, "targets": {"ratio_wall_vs_ideal": "<= 1.1", "init_to_first_trial_s": "<= 10"},
    })


if __name__ == "__main__":
    main()
