"""Peak memory of one trial: one ``fit`` epoch per model, each in a fresh subprocess.

The child decodes and caches the whole split (as a trial holds it), builds the model with
(calibrated random) pretrained weights, trains one epoch on the first ``--train-images``
images, evaluates on the first ``--val-images`` val images and saves a checkpoint as the
trial's hook does. The peak resident set comes from ``getrusage(RUSAGE_SELF).ru_maxrss``
in the child; it is reached within the first steps, so a short epoch shows the same peak
as a full one. A Ray worker adds its own runtime (about 0.2-0.3 GB) on top.

``--reused-trials N`` measures instead what a sweep does to one process: N one-epoch trials
of the first model, one at a time through the project's driver (``reuse_actors``: every
trial runs in the same Ray actor), with the actor's RSS at each trial's start and end and
its peak during the trial (sampled every 50 ms).

    python -m bench.memory                          # light, r50, r50v2 at the quick-profile size
    python -m bench.memory --device cuda            # also torch.cuda.max_memory_allocated
    python -m bench.memory --reused-trials 8 --train-images 30 --json bench/results/memory_reused.json
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import torch

from bench import common
from pedtune.config import StudyConfig
from pedtune.data.dataset import SampleSet
from pedtune.engine.train import EpochHook, EpochResult, TrainedHook, fit

MARKER = "BENCH_MEMORY "


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


class RssLoggingFit:
    """The real ``fit``, with the process's RSS around it written to ``log_dir`` (one file per trial)."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def __call__(self, config: StudyConfig, train_samples: SampleSet, eval_samples: SampleSet,
                 pretrained: Mapping[str, torch.Tensor] | None = None, on_epoch_end: EpochHook | None = None,
                 resume: Mapping[str, Any] | None = None, on_epoch_trained: TrainedHook | None = None) -> None:
        start = rss_mb()
        # ru_maxrss never resets, so the trial's own peak is sampled.
        with common.Sampler(rss_mb, 0.05) as sampler, contextlib.redirect_stderr(io.StringIO()):
            fit(config, train_samples, eval_samples, pretrained, on_epoch_end, resume, on_epoch_trained)
        end = rss_mb()
        row = {"pid": os.getpid(), "batch_size": config.train.batch_size, "rss_start_mb": round(start, 1),
               "peak_mb": round(max(start, end, *sampler.samples), 1), "rss_end_mb": round(end, 1), "t": time.time()}
        (Path(self.log_dir) / f"{uuid.uuid4().hex}.json").write_text(json.dumps(row))


def small_trial_inputs(args: Any, root: Path, config: StudyConfig) -> tuple[SampleSet, SampleSet, dict]:
    """The split decoded and cached whole (as a trial holds it), trained and scored on its first
    ``--train-images`` / ``--val-images``, from calibrated random weights."""
    train_samples, val_samples = common.sample_sets(root, config)
    train_samples.stems = train_samples.stems[: args.train_images]
    val_samples.stems = val_samples.stems[: args.val_images]
    return train_samples, val_samples, common.pseudo_pretrained(config, common.batches(train_samples, 2, 1))


def reused_actor(args: Any) -> dict[str, Any]:
    """RSS of the one actor that runs every trial of a sequential sweep."""
    import ray.cloudpickle
    from ray import tune

    # Ray workers import this module's code by value: they need not find the bench folder.
    # (Imported here, so the per-model mode runs where Ray is not installed.)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    arch = common.ARCHS[args.models[0]]
    config = common.study_config(args, {
        "model": {"arch": arch}, "train": {"epochs": 1},
        "tune": {"num_samples": args.reused_trials, "max_concurrent": 1, "scheduler": "fifo",
                 "resources_per_trial": {"cpu": os.cpu_count() or 1, "gpu": 1 if args.device == "cuda" else 0}},
    })
    with common.dataset(args) as root, tempfile.TemporaryDirectory(prefix="pedtune-bench-memory-") as tmp:
        train_samples, val_samples, pretrained = small_trial_inputs(args, root, config)
        (Path(tmp) / "logs").mkdir()
        with contextlib.redirect_stdout(io.StringIO()):
            grid = common.driver_sweep(config, Path(tmp) / "sweep", (train_samples, val_samples), pretrained,
                                       RssLoggingFit(str(Path(tmp) / "logs")), tune.Callback())
        errors = [r.error for r in grid if r.error]
        if errors:
            raise RuntimeError(f"{len(errors)} trials failed: {errors[0]}")
        rows = sorted((json.loads(p.read_text()) for p in (Path(tmp) / "logs").glob("*.json")), key=lambda r: r["t"])
    for index, row in enumerate(rows):
        row.pop("t")
        common.log(f"trial {index}: batch {row['batch_size']}, RSS {row['rss_start_mb']:.0f} MB at start, "
                   f"peak {row['peak_mb']:.0f} MB, {row['rss_end_mb']:.0f} MB at end")
    return {"arch": arch, "actor_processes": len({r["pid"] for r in rows}), "trials": rows,
            "train_images": args.train_images, "val_images": args.val_images}


def child(args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"arch": common.ARCHS[args.child], "rss_after_imports_mb": round(rss_mb(), 1)}
    with common.dataset(args) as root:
        config = common.study_config(args, {"model": {"arch": common.ARCHS[args.child]},
                                            "train": {"epochs": 1, "amp": args.amp == "on"},
                                            "tune": {"scheduler": "fifo"}})  # one epoch, no sweep
        train_samples, val_samples, pretrained = small_trial_inputs(args, root, config)
        cached = sum(s.image.nbytes + s.masks.nbytes for st in (train_samples, val_samples) for s in st._samples.values())
        out["cache_mb"] = round(cached / 2**20, 1)
        out["rss_before_fit_mb"] = round(rss_mb(), 1)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def checkpoint(result: EpochResult, state: Any) -> None:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state(), Path(folder) / "state.pt")

        with contextlib.redirect_stderr(io.StringIO()):
            fit(config, train_samples, val_samples, pretrained, on_epoch_end=checkpoint)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.device == "cuda":
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["amp"] = args.amp == "on"
    return out


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=tuple(common.ARCHS), default=list(common.ARCHS))
    p.add_argument("--train-images", type=int, default=6)
    p.add_argument("--val-images", type=int, default=4)
    p.add_argument("--child", choices=tuple(common.ARCHS), help="internal: measure one model in this process")
    p.add_argument("--reused-trials", type=int, default=0,
                   help="instead: this many trials of the first model in one reused Ray actor")
    args = p.parse_args(argv)
    common.setup(args)
    if args.reused_trials:
        return common.emit("memory", args, {"reused_actor": reused_actor(args)})
    if args.child:
        print(MARKER + json.dumps(child(args)), flush=True)
        return {}
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    forwarded = [a for i, a in enumerate(forwarded) if a != "--json" and (i == 0 or forwarded[i - 1] != "--json")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(common.REPO), os.environ.get("PYTHONPATH")]))}
    rows = []
    for model in args.models:
        for amp in common.amp_modes(args):
            cmd = [sys.executable, "-m", "bench.memory", *forwarded, "--child", model, "--amp", "on" if amp else "off"]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO, env=env, timeout=1800)
            line = next((l for l in done.stdout.splitlines() if l.startswith(MARKER)), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            row = json.loads(line[len(MARKER):])
            common.log(f"{model}: peak RSS {row['peak_rss_mb']:.0f} MB (before fit {row['rss_before_fit_mb']:.0f} MB)")
            rows.append(row)
    config = common.study_config(args)
    return common.emit("memory", args, {"image_size": [config.model.min_size, config.model.max_size],
                                        "batch_size": config.train.batch_size, "models": rows})


if __name__ == "__main__":
    main()
