"""Peak memory of one trial: one ``fit`` epoch per model, each in a fresh subprocess.

The child decodes and caches the whole split (as a trial holds it), builds the model with
(calibrated random) pretrained weights, trains one epoch on the first ``--train-images``
images, evaluates on the first ``--val-images`` val images and saves a checkpoint as the
trial's hook does. The peak resident set comes from ``getrusage(RUSAGE_SELF).ru_maxrss``
in the child; it is reached within the first steps, so a short epoch shows the same peak
as a full one. A Ray worker adds its own runtime (about 0.2-0.3 GB) on top.

    python -m bench.memory                          # light, r50, r50v2 at the quick-profile size
    python -m bench.memory --device cuda            # also torch.cuda.max_memory_allocated
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
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import torch

from bench import common
from pedtune.engine.train import EpochResult, fit

MARKER = "BENCH_MEMORY "


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def child(args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"arch": common.ARCHS[args.child], "rss_after_imports_mb": round(rss_mb(), 1)}
    with common.dataset(args) as root:
        config = common.study_config(args, {"model": {"arch": common.ARCHS[args.child]},
                                            "train": {"epochs": 1, "amp": args.amp == "on"}})
        train_store, val_store = common.stores(root, config)
        cached = sum(s.image.nbytes + s.masks.nbytes for st in (train_store, val_store) for s in st._samples.values())
        out["cache_mb"] = round(cached / 2**20, 1)
        train_store.stems = train_store.stems[: args.train_images]
        val_store.stems = val_store.stems[: args.val_images]
        pretrained = common.pseudo_pretrained(config, common.batches(train_store, 2, 1))
        out["rss_before_fit_mb"] = round(rss_mb(), 1)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def checkpoint(result: EpochResult, state: Any) -> None:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state(), Path(folder) / "state.pt")

        with contextlib.redirect_stderr(io.StringIO()):
            fit(config, train_store, val_store, pretrained, on_epoch_end=checkpoint)
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
    args = p.parse_args(argv)
    common.setup(args)
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
