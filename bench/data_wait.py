"""Data wait with the cache off: the share of each training step spent waiting for its batch.

The CPU-quick profile with ``data.cache: false``: every image is decoded, resized and its masks
split in the DataLoader (``engine.train._loader``, as ``fit`` builds it) while the project's own
``engine.train.train_one_epoch`` trains on it, so the loader's workers share the cores with
the step, as in a real run. The loader is wrapped so that each ``next()`` is timed; the share is
that wait over the whole loop's time, for the first ``--steps`` steps of an epoch (worker
start-up included: a shuffled loader starts its workers afresh every epoch). Each repetition
runs every ``--workers`` count in a rotated order; the model (built as a pretrained one is, see
README) and optimizer are restored before each run. ``workers=0`` decodes in the training
process itself, the reference.

    python -m bench.data_wait --data PATH
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import common
from pedtune.data.dataset import SampleSet
from pedtune.device import resolve_device
from pedtune.engine.train import _loader, build_optimizer, build_scheduler, train_one_epoch
from pedtune.model.factory import build_model

WORKERS = (2, 0)


class TimedLoader:
    """The first ``steps`` batches of ``loader``, with the time each ``next()`` waited."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps, self.waits = loader, min(steps, len(loader)), []

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator:
        iterator = iter(self.loader)
        for _ in range(self.steps):
            start = common.timer()
            batch = next(iterator)
            self.waits.append(common.timer() - start)
            yield batch
        del iterator  # shuts the workers down before the next variant starts its own


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=list(WORKERS), help="DataLoader worker counts")
    p.add_argument("--steps", type=int, default=8, help="training steps per timed run")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions of the worker counts")
    args = p.parse_args(argv)
    common.setup(args)
    with common.dataset(args) as root:
        config = common.study_config(args, {"data": {"cache": False}})
        split = common.split_of(root, config)
        train = SampleSet(root, split.train, config.model.min_size, config.model.max_size, cache=False)
        device = resolve_device(config.train.device)
        calibration = common.batches(SampleSet(root, split.train[:4], config.model.min_size, config.model.max_size),
                                     config.train.batch_size, 2)
        pretrained = common.pseudo_pretrained(config, calibration)
        model = build_model(config.model, pretrained, num_classes=len(train.categories) + 1).to(device)
        optimizer = build_optimizer([q for q in model.parameters() if q.requires_grad], config.train)
        initial = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
        runs: dict[str, dict[str, list[float]]] = {}
        for rep in range(args.reps):
            shift = rep % len(args.workers)
            for workers in args.workers[shift:] + args.workers[:shift]:
                model.load_state_dict(initial[0])
                optimizer.load_state_dict(initial[1])
                loader = TimedLoader(_loader(train, config.train.batch_size, workers, config.train.hflip_prob,
                                             shuffle_seed=rep), args.steps)
                scheduler = build_scheduler(optimizer, config.train, len(loader))
                scaler = torch.amp.GradScaler(device.type, enabled=False)
                start = common.timer()
                train_one_epoch(model, loader, optimizer, scheduler, scaler, config.train, device, epoch=1,
                                label="data_wait")
                total = common.timer() - start
                entry = runs.setdefault(f"workers={workers}", {"data_share": [], "step_s": [], "wait_s": []})
                entry["data_share"].append(sum(loader.waits) / total)
                entry["step_s"].append(total / loader.steps)
                entry["wait_s"].append(sum(loader.waits) / loader.steps)
                common.log(f"workers={workers}: data wait {100 * entry['data_share'][-1]:.1f} % of "
                           f"{entry['step_s'][-1]:.2f} s per step")
        results = {name: {key: common.stats(values) for key, values in entry.items()} for name, entry in runs.items()}
    return common.emit("data_wait", args, {
        "train_images": len(split.train), "batch_size": config.train.batch_size, "steps": args.steps,
        "image_size": [config.model.min_size, config.model.max_size], "arch": config.model.arch,
        "cache": False, "runs": results, "target": "data_share <= 0.10 with workers",
    })


if __name__ == "__main__":
    main()
