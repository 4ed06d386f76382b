"""Data pipeline: samples/s of the project's dataset + DataLoader versus the training step it feeds.

Loader variants: cache on/off x 0/1/2 workers, each built exactly as ``fit`` builds its
training loader (``pedtune.engine.train._loader``: decode, resize, flip, float conversion,
collate). Each repetition times every variant in a rotated order: the first epoch (worker
start-up included) and a second, steady one. The consumption side is the project's
``train_one_epoch`` on in-memory batches for the light and the R50 model at the same size.
On a real run the workers share the cores with the training step; here each side runs alone.

    python -m bench.data_pipeline
    python -m bench.data_pipeline --device cuda --models light r50
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, train_step
from pedtune.data.dataset import SampleSet
from pedtune.engine.train import _loader

WORKERS = (0, 1, 2)


def loader_rates(store_args: tuple, batch_size: int, hflip: float, variants: list[tuple[bool, int]],
                 reps: int) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Samples/s per variant and epoch kind; also the one-off cost of filling the cache."""
    root, stems, min_size, max_size = store_args
    cached = SampleSet(root, stems, min_size, max_size, cache=True)
    start = common.timer()
    cached.preload()
    preload_s = common.timer() - start
    rates: dict[str, dict[str, list[float]]] = {}
    for rep in range(reps):
        shift = rep % len(variants)
        for cache, workers in variants[shift:] + variants[:shift]:
            store = cached if cache else SampleSet(root, stems, min_size, max_size, cache=False, reader=cached.reader)
            loader = _loader(store, batch_size, workers, hflip, shuffle_seed=0)
            entry = rates.setdefault(f"cache={'on' if cache else 'off'},workers={workers}", {"first": [], "steady": []})
            for kind in ("first", "steady"):
                start = common.timer()
                count = sum(len(images) for images, _ in loader)
                entry[kind].append(count / (common.timer() - start))
    return rates, {"preload_s": round(preload_s, 3), "preload_ms_per_image": round(1000 * preload_s / len(stems), 2)}


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=tuple(common.ARCHS), default=["light", "r50"])
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of the loader variants")
    p.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    p.add_argument("--steps", type=int, default=3, help="batches per timed training run")
    p.add_argument("--step-reps", type=int, default=2, help="timed training runs per model")
    args = p.parse_args(argv)
    common.setup(args)
    with common.dataset(args) as root:
        config = common.study_config(args)
        split = common.split_of(root, config)
        store_args = (root, list(split.train), config.model.min_size, config.model.max_size)
        variants = [(cache, w) for cache in (True, False) for w in args.workers]
        rates, preload = loader_rates(store_args, config.train.batch_size, config.train.hflip_prob, variants, args.reps)
        loading = {name: {kind: common.stats(v) for kind, v in r.items()} for name, r in rates.items()}
        for name, r in loading.items():
            common.log(f"loader {name}: {r['steady']['median']:.1f} samples/s steady, {r['first']['median']:.1f} first epoch")

        consumption = {}
        train_samples, _ = common.sample_sets(root, config)
        for model in args.models:
            for amp in common.amp_modes(args):
                cfg = common.study_config(args, {"model": {"arch": common.ARCHS[model]}, "train": {"amp": amp}})
                data = common.batches(train_samples, cfg.train.batch_size, args.steps)
                pretrained = common.pseudo_pretrained(cfg, data[:2])
                with common.GpuSampler(args.device) as gpu:
                    ips = train_step.measure(cfg, data, pretrained, variants=("project",), reps=args.step_reps).timed["project"]
                key = model + ("+amp" if amp else "")
                consumption[key] = {"images_per_s": common.stats(ips), "gpu_util_pct": gpu.mean}
                common.log(f"train step {key}: {consumption[key]['images_per_s']['median']:.2f} images/s")

        ratios = {
            loader: {model: round(r["steady"]["median"] / c["images_per_s"]["median"], 1) for model, c in consumption.items()}
            for loader, r in loading.items()
        }
    return common.emit("data_pipeline", args, {
        "train_images": len(split.train), "batch_size": config.train.batch_size,
        "image_size": [config.model.min_size, config.model.max_size], "cache_fill": preload,
        "loader_samples_per_s": loading, "train_step": consumption,
        "ratio_loader_vs_step": ratios, "target": ">= 10",
    })


if __name__ == "__main__":
    main()
