"""``data.cache``'s stated memory next to what the cache then holds, per image.

For each ``--sizes`` entry (model.min_size x model.max_size) a fresh process indexes the dataset
(``pedtune.data.index.index_folder``), takes ``pedtune.data.cache_memory.cache_footprint``'s
estimate for every image of the project's split, then decodes and caches them all
(``SampleSet.preload``, as a stage does) and measures what it holds: the bytes of the cached
tensors (image, masks, boxes, labels) and the growth of the process's resident set (after one
image decoded outside the cache, so the decoders' start-up is not counted).

Usage: ``python -m bench.cache_memory --data PATH [--sizes 320x480 800x1333] [--json PATH]``.
"""

from __future__ import annotations

import gc
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psutil

from bench.common import dataset, emit, log, parser, setup, split_of, study_config, timer
from pedtune.data.cache_memory import cache_footprint
from pedtune.data.dataset import SampleSet, reader_for
from pedtune.data.index import index_folder

MIB = 2**20


def held_bytes(samples: SampleSet) -> int:
    """The bytes of every cached sample's tensors."""
    total = 0
    for index in range(len(samples)):
        sample = samples[index]
        total += sum(t.numel() * t.element_size() for t in (sample.image, sample.masks, sample.boxes, sample.labels))
    return total


def measure(root: str, stems: list[str], min_size: int, max_size: int) -> dict[str, Any]:
    """In its own process: the estimate, then the cache filled and what it holds."""
    index = index_folder(Path(root))
    estimate = cache_footprint(index, stems, min_size, max_size).num_bytes
    reader = reader_for(Path(root), index)
    reader.sample(stems[0], min_size, max_size)  # the decoders' own start-up is not the cache's
    gc.collect()
    before = psutil.Process().memory_info().rss
    started = timer()
    samples = SampleSet(Path(root), stems, min_size, max_size, cache=True, reader=reader)
    samples.preload()
    fill_s = timer() - started
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    held = held_bytes(samples)
    images = len(stems)
    return {"min_size": min_size, "max_size": max_size, "images": images,
            "estimate_mib_per_image": round(estimate / images / MIB, 3),
            "held_mib_per_image": round(held / images / MIB, 3),
            "rss_growth_mib_per_image": round(grown / images / MIB, 3),
            "held_vs_estimate": round(held / estimate, 4), "rss_growth_vs_estimate": round(grown / estimate, 4),
            "fill_s": round(fill_s, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["320x480", "800x1333"], help="model.min_size x model.max_size")
    args = p.parse_args(argv)
    setup(args)
    config = study_config(args)
    runs = []
    with dataset(args) as root:
        split = split_of(root, config)
        stems = list(split.train + split.val + split.test)
        for size in args.sizes:
            min_size, max_size = (int(v) for v in size.split("x"))
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                run = pool.submit(measure, str(root), stems, min_size, max_size).result()
            log(f"{size}: {run}")
            runs.append(run)
    return emit("cache_memory", args, {"runs": runs})


if __name__ == "__main__":
    main()
