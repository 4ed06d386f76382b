"""The evaluate stage's tail: its runs through the project's Ray path (``evaluate.parallel.execute``)
with more runs than slots, each reserving one slot ("fixed") or the runs left after the last full
round reserving the slots between them ("sized", the project's default: ``parallel.run_sizes``).

Every run is a real ``fit`` plus the test scoring (``evaluate.runs.train_and_test``) of the same
configuration at another seed, from calibrated random weights (``common.pseudo_pretrained``). The
slots are ``--slots`` runs at ``cores / slots`` CPUs each; with three runs on two slots the third
starts when the first ends (fixed: on one slot, alone once the second has ended) or once both
have ended (sized: on both slots). Measured per stage: wall time (``ray.init`` included), the
tail (from the second-to-last run's end to the last one's), the last run's time and its epochs'.
The modes alternate, ``--reps`` times each.

    python -m bench.evaluate_tail                   # 3 runs x 4 epochs on 2 slots, light model, 2 reps
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common
from pedtune.config import StudyConfig
from pedtune.data.dataset import open_samples
from pedtune.evaluate import parallel
from pedtune.evaluate.runs import INITIAL, RunInputs, RunResult, plan_runs

MODES = {"fixed": False, "sized": True}  # mode -> execute(size_tail=...)


def stage(config: StudyConfig, inputs: RunInputs, seeds: list[int], size_tail: bool) -> dict[str, Any]:
    specs = plan_runs({INITIAL: config}, seeds, None)
    arrivals: list[tuple[float, RunResult]] = []
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        parallel.execute(specs, inputs, config.tune, lambda result: arrivals.append((time.perf_counter(), result)),
                         size_tail=size_tail)
    wall = time.perf_counter() - start
    failed = [result.failure for _, result in arrivals if result.failure]
    if failed:
        raise RuntimeError(f"a run failed: {failed[0]}")
    ends = [at - start for at, _ in arrivals]
    last = arrivals[-1][1]
    return {
        "wall_s": round(wall, 1),
        "tail_s": round(ends[-1] - ends[-2], 1),
        "run_ends_s": [round(end, 1) for end in ends],
        "run_wall_s": [round(result.wall_time_s, 1) for _, result in arrivals],
        "last_run_s": round(last.wall_time_s, 1),
        "last_run_epoch_s": [round(row["epoch_time_s"], 1) for row in last.history],
    }


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--arch", choices=tuple(common.ARCHS), default="light")
    p.add_argument("--runs", type=int, default=3, help="evaluate runs (seeds of one configuration)")
    p.add_argument("--slots", type=int, default=2, help="runs side by side: each reserves cores / slots CPUs")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-images", type=int, default=12)
    p.add_argument("--val-images", type=int, default=4)
    p.add_argument("--reps", type=int, default=2, help="stages per mode, the modes alternating")
    args = p.parse_args(argv)
    common.setup(args)
    cores = parallel.available_cpus()
    if args.slots < 2 or cores < args.slots:
        raise SystemExit(f"--slots {args.slots}: needs 2 or more, at most the {cores} cores here")
    cpu_per_run = cores // args.slots
    config = common.study_config(args, {
        "model": {"arch": common.ARCHS[args.arch]},
        "train": {"epochs": args.epochs},
        "tune": {"scheduler": "fifo", "resources_per_trial": {"cpu": cpu_per_run, "gpu": 0}},
    })
    seeds = list(range(1, args.runs + 1))
    stages: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with common.dataset(args) as root:
        split = common.split_of(root, config)
        size = (config.model.min_size, config.model.max_size)
        train_samples, val_samples, test_samples = (
            open_samples(root, stems, *size, True, "")
            for stems in (split.train[: args.train_images], split.val[: args.val_images], split.test[: args.val_images])
        )
        pretrained = common.pseudo_pretrained(config, common.batches(train_samples, 2, 2))
        inputs = RunInputs(train=train_samples, val=val_samples, test=test_samples, pretrained=pretrained)
        for rep in range(args.reps):
            for mode in (MODES if rep % 2 == 0 else reversed(MODES)):
                result = stage(config, inputs, seeds, MODES[mode])
                common.log(f"{mode} (rep {rep + 1}): wall {result['wall_s']:.1f} s, tail {result['tail_s']:.1f} s, "
                           f"last run's epochs {result['last_run_epoch_s']} s")
                stages[mode].append(result)

    def median(mode: str, key: str) -> float:
        return statistics.median(stage[key] for stage in stages[mode])

    return common.emit("evaluate_tail", args, {
        "arch": config.model.arch, "image_size": [config.model.min_size, config.model.max_size],
        "runs": args.runs, "slots": args.slots, "cpu_per_run": cpu_per_run, "epochs": args.epochs,
        "train_images": len(train_samples), "val_images": len(val_samples), "test_images": len(test_samples),
        "stages": stages,
        "ratio_wall_sized_vs_fixed": round(median("sized", "wall_s") / median("fixed", "wall_s"), 3),
        "ratio_last_run_sized_vs_fixed": round(median("sized", "last_run_s") / median("fixed", "last_run_s"), 3),
    })


if __name__ == "__main__":
    main()
