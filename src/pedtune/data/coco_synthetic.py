"""A small generated COCO instance-segmentation dataset holding every kind of entry COCO allows.

Tests and smoke runs of ``data.format: coco`` need data that is tiny, offline and still
exercises every path of the loader: several categories (with ids that are not 1..K), masks
stored as polygons, compressed RLE and uncompressed RLE, a crowd region, images without any
object (negatives), a greyscale and an RGBA image. Shapes are filled polygons in a colour per
category on a noisy background; every mask is rasterised by pycocotools from the same
polygon the JSON holds, so annotation and pixels agree exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pedtune.config.schema import SyntheticConfig
from pedtune.errors import DataError

SHAPE_NAMES = ("square", "triangle", "disc", "diamond", "bar")
COLOURS = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 200, 30], [200, 60, 220]], dtype=np.uint8)
NEGATIVE_EVERY = 5  # every 5th image holds no object
CROWD_IMAGE = 3  # this image also holds a crowd region
GREY_IMAGE, RGBA_IMAGE = 1, 2
PLACEMENT_TRIES = 40


def category_ids(count: int) -> list[int]:
    """Not 1..K, so that the loader's remapping to contiguous labels is exercised."""
    return [10 * (k + 1) + 1 for k in range(count)]


def category_name(k: int) -> str:
    return SHAPE_NAMES[k] if k < len(SHAPE_NAMES) else f"shape{k}"


def _polygon(shape: int, x: float, y: float, size: float) -> list[float]:
    """A flat [x1, y1, ...] outline of shape ``shape`` in the box (x, y, size, size)."""
    c = size / 2
    if shape % 4 == 0:
        points = [(0, 0), (size, 0), (size, size), (0, size)]
    elif shape % 4 == 1:
        points = [(c, 0), (size, size), (0, size)]
    elif shape % 4 == 2:
        points = [(c + c * np.cos(a), c + c * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
    else:
        points = [(c, 0), (size, c), (c, size), (0, c)]
    return [round(float(v), 2) for px, py in points for v in (x + px, y + py)]


def _uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a 0 run."""
    flat = mask.T.ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1] if len(flat) else 0]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    if sum(counts) != mask.size:  # the last run ends at the image's end
        counts.append(mask.size - sum(counts))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _segmentation(kind: int, polygon: list[float], mask: np.ndarray) -> Any:
    if kind == 0:
        return [polygon]
    if kind == 1:
        rle = mask_utils.encode(np.asfortranarray(mask))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return _uncompressed(mask)


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def write_synthetic_coco(cfg: SyntheticConfig, root: Path) -> Path:
    """Write ``root/images/*.png`` and ``root/annotations.json``; return the JSON's path.

    The same ``cfg`` gives byte-identical files.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} is not empty; refusing to write a synthetic dataset into it")
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(cfg.seed)
    ids = category_ids(cfg.categories)
    images, annotations = [], []
    height, width = cfg.height, cfg.width
    for number in range(cfg.num_images):
        image_id = number + 1
        pixels = rng.integers(90, 150, size=(height, width, 3), dtype=np.uint8)
        occupied = np.zeros((height, width), dtype=bool)
        count = 0 if number % NEGATIVE_EVERY == NEGATIVE_EVERY - 1 else int(rng.integers(1, cfg.max_instances + 1))
        for slot in range(count):
            k = (number + slot) % cfg.categories  # every category turns up, round the images
            for _ in range(PLACEMENT_TRIES):
                size = float(rng.integers(14, max(15, min(height, width) // 2)))
                x, y = float(rng.integers(0, width - int(size))), float(rng.integers(0, height - int(size)))
                polygon = _polygon(k, x, y, size)
                rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
                mask = mask_utils.decode(rle).astype(bool)
                grown = np.zeros_like(mask)
                grown[max(0, int(y) - 2): int(y + size) + 3, max(0, int(x) - 2): int(x + size) + 3] = True
                if mask.any() and not (grown & occupied).any():
                    break
            else:
                continue
            occupied |= mask
            pixels[mask] = COLOURS[k % len(COLOURS)]
            ann_id = len(annotations) + 1
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": ids[k], "iscrowd": 0,
                "bbox": _box(mask), "area": float(mask.sum()),
                "segmentation": _segmentation(ann_id % 3, polygon, mask.astype(np.uint8)),
            })
        if number == CROWD_IMAGE and count:
            # A crowd region: a striped block of the first category, stored as COCO stores crowds.
            crowd = np.zeros((height, width), dtype=bool)
            crowd[height - 12: height - 2, 2:22] = True
            crowd &= ~occupied
            if crowd.any():
                pixels[crowd] = COLOURS[0] // 2 + np.array([0, 60, 0], dtype=np.uint8)
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": ids[0], "iscrowd": 1,
                    "bbox": _box(crowd), "area": float(crowd.sum()),
                    "segmentation": _uncompressed(crowd.astype(np.uint8)),
                })
        picture = Image.fromarray(pixels, "RGB")
        if number == GREY_IMAGE:
            picture = picture.convert("L")
        elif number == RGBA_IMAGE:
            picture = picture.convert("RGBA")
        file_name = f"shapes{image_id:05d}.png"
        picture.save(root / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    categories = [{"id": ids[k], "name": category_name(k), "supercategory": "shape"} for k in range(cfg.categories)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}),
                    encoding="utf-8")
    return path
