"""A small generated dataset in the exact PennFudanPed layout.

Tests and quick smoke runs need data that is tiny, needs no network and still exercises
the real loading code, so this writes the same three folders, file names, PNG modes and
CRLF annotation text as the published archive. The "pedestrians" are upright head +
body blobs in saturated colours on a muted noisy gradient: easy enough that a detector
learns them in a few epochs, hard enough that an untrained one does not find them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pedtune.config.schema import SyntheticConfig
from pedtune.errors import DataError

MIN_PERSON_HEIGHT = 14  # the drawn extent can lose a row to rasterisation; stays >= 12 px
GAP = 2  # background pixels kept between two people so their masks never touch
PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class Box:
    """Inclusive 0-based pixel box."""

    x0: int
    y0: int
    x1: int
    y1: int

    def overlaps(self, other: "Box", gap: int = 0) -> bool:
        return not (
            self.x1 + gap < other.x0
            or other.x1 + gap < self.x0
            or self.y1 + gap < other.y0
            or other.y1 + gap < self.y0
        )


def synthetic_stems(num_images: int) -> list[str]:
    """``FudanPed00001, PennPed00001, FudanPed00002, ...``: both prefixes, as in the real data."""
    stems = []
    for i in range(num_images):
        prefix = "FudanPed" if i % 2 == 0 else "PennPed"
        stems.append(f"{prefix}{i // 2 + 1:05d}")
    return stems


def write_synthetic_dataset(cfg: SyntheticConfig, root: Path) -> None:
    """Write ``cfg.num_images`` images, masks and annotations under ``root``.

    ``root`` plays the role of the ``PennFudanPed/`` folder. The output depends only on
    ``cfg``: the same config gives byte-identical files.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        # Mixing a new set with leftovers would produce orphans or stale files.
        raise DataError(f"{root}: refusing to write a synthetic dataset into a non-empty folder")
    for sub in ("PNGImages", "PedMasks", "Annotation"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(cfg.seed)
    for stem in synthetic_stems(cfg.num_images):
        image, mask, boxes = _render_scene(rng, cfg)
        Image.fromarray(image).save(root / "PNGImages" / f"{stem}.png")
        Image.fromarray(mask).save(root / "PedMasks" / f"{stem}_mask.png")
        text = _annotation_text(stem, width=cfg.width, height=cfg.height, boxes=boxes)
        (root / "Annotation" / f"{stem}.txt").write_bytes(text.encode("ascii"))

    (root / "readme.txt").write_bytes(_crlf(_readme_lines(cfg)).encode("ascii"))
    # The real archive lists later-labelled objects here; a synthetic set has none.
    (root / "added-object-list.txt").write_bytes(_crlf(["# image name (\\t) object index"]).encode("ascii"))


def _render_scene(
    rng: np.random.Generator, cfg: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray, list[Box]]:
    """One image, its instance mask (ids 1..N) and the N mask extents."""
    height, width = cfg.height, cfg.width
    image = _background(rng, height, width)
    mask = np.zeros((height, width), dtype=np.uint8)

    wanted = int(rng.integers(1, cfg.max_instances + 1))
    placed = _place_boxes(rng, height, width, wanted)
    hues = _distinct_hues(rng, len(placed))
    extents: list[Box] = []
    for instance_id, (box, hue) in enumerate(zip(placed, hues), start=1):
        shape = _person_shape(box, height, width)
        mask[shape] = instance_id
        image[shape] = _person_pixels(rng, shape, hue)
        ys, xs = np.nonzero(shape)
        # Boxes are taken from the drawn pixels, so they equal the mask extents exactly.
        extents.append(Box(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
    return image, mask, extents


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted two-colour gradient with pixel noise, so the model cannot key on flat areas."""
    start = rng.uniform(60, 170, size=3)
    end = rng.uniform(60, 170, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    t = np.cos(angle) * xx / width + np.sin(angle) * yy / height
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-9)
    img = start + (end - start) * t[..., None]
    img += rng.normal(0.0, 10.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _place_boxes(rng: np.random.Generator, height: int, width: int, wanted: int) -> list[Box]:
    """Up to ``wanted`` tall, mutually separated boxes; always at least one."""
    max_h = max(MIN_PERSON_HEIGHT, int(height * 0.8))
    min_h = min(max_h, max(MIN_PERSON_HEIGHT, height // 4))
    boxes: list[Box] = []
    for _ in range(wanted):
        for _ in range(PLACEMENT_TRIES):
            h = int(rng.integers(min_h, max_h + 1))
            # People are about 2-3x taller than wide; keep a few px so the head is visible.
            w = int(np.clip(round(h * rng.uniform(0.33, 0.5)), 6, width - 1))
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            candidate = Box(x0, y0, x0 + w - 1, y0 + h - 1)
            if not any(candidate.overlaps(b, GAP) for b in boxes):
                boxes.append(candidate)
                break
        else:
            break  # the image is full; fewer people than drawn is fine
    return boxes


def _distinct_hues(rng: np.random.Generator, n: int) -> list[float]:
    """Hues evenly spaced around the wheel from a random start: distinct people look distinct."""
    start = rng.uniform(0.0, 1.0)
    return [(start + k / max(n, 1)) % 1.0 for k in range(n)]


def _person_shape(box: Box, height: int, width: int) -> np.ndarray:
    """Boolean mask of a round head on top of an elliptic body filling ``box``."""
    yy, xx = np.mgrid[0:height, 0:width]
    w = box.x1 - box.x0 + 1
    cx = (box.x0 + box.x1) / 2.0
    r = max(2.0, 0.3 * w)
    head = (yy - (box.y0 + r)) ** 2 + (xx - cx) ** 2 <= r * r
    body_top = box.y0 + 1.6 * r  # overlaps the head a little: one connected blob
    cy = (body_top + box.y1) / 2.0
    # +0.5 so the pixel centres at both ends of the box fall inside the ellipse.
    ry = (box.y1 - body_top) / 2.0 + 0.5
    rx = w / 2.0
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return head | body


def _person_pixels(rng: np.random.Generator, shape: np.ndarray, hue: float) -> np.ndarray:
    """Saturated colour with light noise for the pixels of ``shape`` (N x 3 uint8)."""
    base = np.array(_hsv_to_rgb(hue, 0.85, 0.95)) * 255.0
    n = int(shape.sum())
    pixels = base[None, :] + rng.normal(0.0, 6.0, size=(n, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _annotation_text(stem: str, width: int, height: int, boxes: list[Box]) -> str:
    """PASCAL Annotation v1.00 text as in the real data: CRLF, 1-based inclusive boxes."""
    label = '"PASpersonWalking"'
    lines = [
        "# Compatible with PASCAL Annotation Version 1.00",
        f'Image filename : "PennFudanPed/PNGImages/{stem}.png"',
        f"Image size (X x Y x C) : {width} x {height} x 3",
        'Database : "The Penn-Fudan-Pedestrian Database"',
        f"Objects with ground truth : {len(boxes)} {{ {' '.join([label] * len(boxes))} }}",
        "# Note there may be some objects not included in the ground truth list for they are severe-occluded",
        "# or have very small size.",
        "# Top left pixel co-ordinates : (1, 1)",
    ]
    for k, b in enumerate(boxes, start=1):
        lines += [
            f"# Details for pedestrian {k} ({label})",
            f'Original label for object {k} {label} : "PennFudanPed"',
            f"Bounding box for object {k} {label} (Xmin, Ymin) - (Xmax, Ymax) : "
            f"({b.x0 + 1}, {b.y0 + 1}) - ({b.x1 + 1}, {b.y1 + 1})",
            f'Pixel mask for object {k} {label} : "PennFudanPed/PedMasks/{stem}_mask.png"',
            "",
        ]
    return _crlf(lines)


def _readme_lines(cfg: SyntheticConfig) -> list[str]:
    return [
        "Synthetic PennFudanPed-format dataset written by pedtune (not real pedestrians).",
        "",
        f"images: {cfg.num_images}  size: {cfg.width} x {cfg.height}  "
        f"max instances per image: {cfg.max_instances}  seed: {cfg.seed}",
        "",
        "PNGImages/  8-bit RGB PNG",
        "PedMasks/   <stem>_mask.png, 8-bit grayscale: 0 = background, k = instance k (1..N)",
        "Annotation/ PASCAL Annotation v1.00 text; boxes are the 1-based inclusive mask extents",
    ]


def _crlf(lines: list[str]) -> str:
    return "".join(line + "\r\n" for line in lines)
