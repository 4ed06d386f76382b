"""GPU packing: trials per hour with a whole GPU, half of one and a quarter of one per trial.

A trial here is what a Tune trial runs, without Ray: ``pedtune.run_limits.place_run`` with the
trial's grant (the GPU share, to whose memory the process is capped) and ``cores / concurrency``
torch threads (``train.threads``), then ``fit``. For a share, ``1 / share`` worker processes start at once, like the
sweep's reused actors, and each trains ``--trials-per-slot`` trials one after the other. The
trials come from ``--params`` (the GPU defaults: ResNet-50 at 800-1333 px), each at the next
batch size of ``train.batch_size``'s search space (2, 4, 8, 2, ...), so every share trains the
same trials. They are short (``--epochs`` of the first ``--train-images``), so the figure counts
each trial's start-up, as short ASHA rungs do; Ray's own per-trial overhead (``tune_overhead``)
is not in it, and neither Ray nor MLflow need be installed.

Measured per share: wall time from the workers' start to the last trial's end, trials finished
per hour, trials out of memory (beyond their share), each trial's time and CUDA peak, the GPU's
mean utilisation and its peak memory in use (``nvidia-smi``), sampled every 0.2 s.

    python -m bench.gpu_packing --data PATH          # on a CUDA machine; params.yaml by default

It refuses to run without CUDA; ``--device cpu`` runs the same trials on the CPU (no memory cap),
to test the script only.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import common
from pedtune.config import StudyConfig, with_train_overrides
from pedtune.data.dataset import open_samples
from pedtune.engine.train import fit
from pedtune.evaluate.parallel import available_cpus
from pedtune.evaluate.runs import out_of_memory
from pedtune.run_limits import Grant, place_run

SHARES = (1.0, 0.5, 0.25)


def gpu_memory_used_mb() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5).stdout
        return float(out.split()[0])
    except Exception:  # no nvidia-smi (the CPU smoke test)
        return None


def batch_sizes(config: StudyConfig) -> list[int]:
    """The searched batch sizes, or the train section's one."""
    searched = next((d for d in config.tune.search_space if d.param == "train.batch_size" and d.type == "choice"), None)
    return [int(v) for v in searched.values] if searched else [config.train.batch_size]


def slot(config: StudyConfig, grant: Grant, root: str, stems: tuple[list[str], list[str]], weights: str,
         trials: list[int], results: Any) -> None:
    """One worker process: its trials one after another, each row put on ``results``."""
    size = (config.model.min_size, config.model.max_size)
    train, val = (open_samples(Path(root), part, *size, True, "") for part in stems)
    pretrained = torch.load(weights, map_location="cpu", weights_only=True)
    for batch_size in trials:
        trial = with_train_overrides(config, {"train.batch_size": batch_size})
        start = time.perf_counter()
        row: dict[str, Any] = {"batch_size": batch_size}
        try:
            placed = place_run(trial, grant)
            if placed.train.device != "cpu" and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            with contextlib.redirect_stderr(io.StringIO()):
                fit(placed, train, val, pretrained)
            if torch.cuda.is_initialized():
                row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        except (RuntimeError, MemoryError) as error:
            if not out_of_memory(error):
                raise
            row["out_of_memory"] = str(error).strip().splitlines()[0]
        row["end"], row["trial_s"] = time.time(), round(time.perf_counter() - start, 1)
        results.put(row)


def pack(config: StudyConfig, share: float, cores: int, root: Path, stems: tuple[list[str], list[str]],
         weights: Path, trials_per_slot: int, device: str) -> dict[str, Any]:
    concurrency = max(1, round(1 / share))
    grant = Grant(gpu=share)
    threads = max(1, cores // concurrency)  # each trial's share of the cores, as Ray would reserve it
    config = config.model_copy(update={"train": config.train.model_copy(update={"threads": threads})})
    sizes = batch_sizes(config)
    trials = [sizes[i % len(sizes)] for i in range(concurrency * trials_per_slot)]
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    results = context.Queue()
    workers = [context.Process(target=slot, args=(config, grant, str(root), stems, str(weights),
                                                  trials[i::concurrency], results)) for i in range(concurrency)]
    with common.GpuSampler(device) as busy, common.Sampler(gpu_memory_used_mb, 0.2, device == "cuda") as memory:
        start = time.time()
        for worker in workers:
            worker.start()
        rows: list[dict[str, Any]] = []
        while len(rows) < len(trials):  # read before join: a child exits only once its queue is drained
            try:
                rows.append(results.get(timeout=5))
            except queue.Empty:
                if not any(worker.is_alive() for worker in workers):
                    raise RuntimeError(f"a worker failed (exit codes {[w.exitcode for w in workers]})") from None
        for worker in workers:
            worker.join()
    wall = max(row.pop("end") for row in rows) - start
    failed = [row for row in rows if "out_of_memory" in row]
    return {
        "gpu_per_trial": share, "concurrency": concurrency, "cpu_per_trial": threads, "trials": len(rows),
        "out_of_memory": len(failed), "errors": [row["out_of_memory"] for row in failed][:3],
        "wall_s": round(wall, 1), "trials_per_hour": round((len(rows) - len(failed)) / wall * 3600, 1),
        "trial_rows": rows, "gpu_busy_percent": busy.mean, "gpu_memory_peak_mb": max(memory.samples, default=None),
    }


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.set_defaults(device="cuda", params=common.REPO / "params.yaml")
    p.add_argument("--shares", type=float, nargs="+", default=list(SHARES), help="GPU per trial, one packing each")
    p.add_argument("--trials-per-slot", type=int, default=1, help="trials each worker trains one after another")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-images", type=int, default=16)
    p.add_argument("--val-images", type=int, default=8)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_packing measures trials sharing a GPU, and there is no CUDA device here "
                         "(--device cpu runs the same trials on the CPU, to test the script only)")
    if any(not 0 < share <= 1 for share in args.shares):
        raise SystemExit(f"--shares {args.shares}: each must be in (0, 1]")
    common.setup(args)
    cores = available_cpus()
    config = common.study_config(args, {"train": {"epochs": args.epochs}, "tune": {"scheduler": "fifo"}})
    runs = []
    with common.dataset(args) as root, tempfile.TemporaryDirectory(prefix="pedtune-bench-packing-") as tmp:
        split = common.split_of(root, config)
        stems = (split.train[: args.train_images], split.val[: args.val_images])
        train = open_samples(root, stems[0], config.model.min_size, config.model.max_size, True, "")
        weights = Path(tmp) / "pretrained.pt"
        torch.save(common.pseudo_pretrained(config, common.batches(train, 2, 2)), weights)
        for share in args.shares:
            run = pack(config, share, cores, root, stems, weights, args.trials_per_slot, args.device)
            common.log(f"{share:g} GPU per trial, {run['concurrency']} at a time: {run['trials_per_hour']:.0f} "
                       f"trials/h ({run['trials']} in {run['wall_s']:.0f} s, {run['out_of_memory']} out of memory), "
                       f"GPU busy {run['gpu_busy_percent']} %, peak {run['gpu_memory_peak_mb']} MB")
            runs.append(run)
    whole = next((run for run in runs if run["gpu_per_trial"] == 1), None)
    for run in runs:
        run["ratio_vs_whole_gpu"] = (round(run["trials_per_hour"] / whole["trials_per_hour"], 3)
                                     if whole and whole["trials_per_hour"] else None)
    return common.emit("gpu_packing", args, {
        "arch": config.model.arch, "image_size": [config.model.min_size, config.model.max_size],
        "epochs": args.epochs, "batch_sizes": batch_sizes(config), "train_images": len(stems[0]),
        "val_images": len(stems[1]), "cores": cores, "runs": runs,
    })


if __name__ == "__main__":
    main()
