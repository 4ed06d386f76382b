"""Validating and indexing a large COCO JSON, next to pycocotools loading the same file.

A generated instance file (``--images`` images of 640 x 480, ``--per-image`` objects each, every
object a 12-point polygon with its box and area) is read by ``pedtune.data.coco.index_coco``
(parse, check every entry, index by image), by the fetch stage's whole pass over it (the same,
then the dataset's index built and written as ``data/index.json``: ``pedtune.data.index``) and by
``pycocotools.coco.COCO`` (parse, index), interleaved ``--repeats`` times; the medians and the
ratios to pycocotools are reported. The image-file check
(decode every image, compare its size with the JSON) is a separate pass, timed on
``--files`` small generated PNGs with 1 and ``--workers`` threads.

Usage: ``python -m bench.coco_indexing [--images 5000 --per-image 10] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from bench.common import RESULTS, machine
from pedtune.data.coco import check_image_files, index_coco
from pedtune.data.coco_fetch import open_dataset
from pedtune.data.index import coco_index, write_index


def generate(path: Path, images: int, per_image: int, seed: int = 0) -> int:
    """Write the instance file; return its size in bytes."""
    rng = np.random.default_rng(seed)
    entries, annotations = [], []
    angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    for image_id in range(1, images + 1):
        entries.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": 480, "width": 640})
        for _ in range(per_image):
            radius = float(rng.uniform(8, 60))
            cx, cy = float(rng.uniform(radius, 640 - radius)), float(rng.uniform(radius, 480 - radius))
            polygon = [round(v, 2) for a in angles for v in (cx + radius * math.cos(a), cy + radius * math.sin(a))]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.integers(1, 11)), "iscrowd": 0,
                                "bbox": [round(cx - radius, 2), round(cy - radius, 2), round(2 * radius, 2),
                                         round(2 * radius, 2)],
                                "area": round(math.pi * radius**2, 2), "segmentation": [polygon]})
    categories = [{"id": k, "name": f"category{k}"} for k in range(1, 11)]
    path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
    return path.stat().st_size


def timed(call) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        call()
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--per-image", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", type=int, default=400, help="image files for the size-check pass")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--json", type=Path, default=RESULTS / "coco_indexing.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pedtune-bench-") as folder:
        path = Path(folder) / "instances.json"
        size = generate(path, args.images, args.per_image)
        ours, fetch, theirs = [], [], []
        index_file = Path(folder) / "index.json"
        for _ in range(args.repeats):
            ours.append(timed(lambda: index_coco(path)))
            # The content hash covers the image files, which this file has none of: not timed here.
            fetch.append(timed(lambda: write_index(coco_index(open_dataset(Path(folder), {"all": path}), ""),
                                                   index_file)))
            theirs.append(timed(lambda: COCO(str(path))))
        index_file_bytes = index_file.stat().st_size
        images_dir = Path(folder) / "images"
        images_dir.mkdir()
        listed = index_coco(path).images
        chosen = [listed[i] for i in range(1, args.files + 1)]
        for image in chosen:
            Image.new("RGB", (image.width, image.height), (90, 120, 150)).save(images_dir / image.file_name, quality=90)
        check = {workers: timed(lambda w=workers: check_image_files(images_dir, chosen, workers=w))
                 for workers in (1, args.workers)}
    result = {
        "benchmark": "coco_indexing",
        "machine": machine(),
        "images": args.images, "instances": args.images * args.per_image, "json_bytes": size,
        "index_coco_s": {"median": round(statistics.median(ours), 3), "all": [round(t, 3) for t in ours]},
        "pycocotools_COCO_s": {"median": round(statistics.median(theirs), 3), "all": [round(t, 3) for t in theirs]},
        "ratio_to_pycocotools": round(statistics.median(ours) / statistics.median(theirs), 3),
        "index_written_s": {"median": round(statistics.median(fetch), 3), "all": [round(t, 3) for t in fetch]},
        "index_written_ratio_to_pycocotools": round(statistics.median(fetch) / statistics.median(theirs), 3),
        "index_bytes": index_file_bytes,
        "image_check": {"files": args.files, "size": "640x480 JPEG",
                        **{f"workers_{w}_s": round(t, 3) for w, t in check.items()},
                        **{f"workers_{w}_ms_per_image": round(1000 * t / args.files, 2) for w, t in check.items()}},
        "measured_at": round(time.time()),
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
