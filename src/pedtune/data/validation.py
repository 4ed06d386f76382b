"""Check an extracted PennFudanPed folder: every image paired with a decodable mask of the same size, with instances."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pedtune.errors import DataError


FOLDERS = ("PNGImages", "PedMasks", "Annotation")
MASK_SUFFIX = "_mask.png"


@dataclass(frozen=True)
class DatasetSummary:
    num_images: int
    num_instances: int
    stems: tuple[str, ...]
    shapes: tuple[tuple[int, int, int], ...] = ()  # per stem: (height, width, instances), as validated


def validate_dataset(root: Path, expected_count: int | None = None) -> DatasetSummary:
    """Check layout, pairing, decodability, sizes and non-empty masks; name the bad file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    for sub in FOLDERS:
        if not (root / sub).is_dir():
            raise DataError(f"{root}: missing folder {sub}/ (expected {', '.join(f + '/' for f in FOLDERS)})")

    stems = _paired_stems(root)
    if not stems:
        raise DataError(f"{root}: PNGImages/ holds no .png images")
    if expected_count is not None and len(stems) != expected_count:
        raise DataError(f"{root}: found {len(stems)} images, expected {expected_count} "
                        "(an incomplete copy? data.expected_images sets the count, null accepts any)")

    shapes = tuple(_check_pair(root / "PNGImages" / f"{stem}.png", root / "PedMasks" / f"{stem}{MASK_SUFFIX}")
                   for stem in stems)
    return DatasetSummary(num_images=len(stems), num_instances=sum(count for _, _, count in shapes),
                          stems=tuple(stems), shapes=shapes)


def _paired_stems(root: Path) -> list[str]:
    """Stems present in all three folders; any file without its partners is an error."""
    images = {p.stem: p for p in (root / "PNGImages").glob("*.png")}
    masks: dict[str, Path] = {}
    for p in (root / "PedMasks").glob("*.png"):
        if not p.name.endswith(MASK_SUFFIX):
            raise DataError(f"{p}: mask file names must end in {MASK_SUFFIX}")
        masks[p.name[: -len(MASK_SUFFIX)]] = p
    notes = {p.stem: p for p in (root / "Annotation").glob("*.txt")}

    _fail_on_orphans(images, masks, f"has no mask PedMasks/<stem>{MASK_SUFFIX}")
    _fail_on_orphans(images, notes, "has no annotation Annotation/<stem>.txt")
    _fail_on_orphans(masks, images, "has no image PNGImages/<stem>.png")
    _fail_on_orphans(notes, images, "has no image PNGImages/<stem>.png")
    return sorted(images)


def _fail_on_orphans(have: dict[str, Path], partners: dict[str, Path], what: str) -> None:
    orphans = sorted(set(have) - set(partners))
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DataError(f"{have[orphans[0]]} {what.replace('<stem>', orphans[0])}{more}")


def _decode(path: Path, want_pixels: bool) -> tuple[tuple[int, int], str, np.ndarray | None]:
    """Fully decode ``path``; return its size, mode and (if asked) pixels. Names the file on failure."""
    try:
        with Image.open(path) as im:
            im.load()  # forces the full decode: a truncated file fails here, not in training
            # Read everything needed before the file is closed; a closed image has no pixels.
            return im.size, im.mode, (np.asarray(im) if want_pixels else None)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image: {exc}") from exc


def _check_pair(image_path: Path, mask_path: Path) -> tuple[int, int, int]:
    """Validate one image/mask pair; return its height, width and number of instances."""
    image_size, _, _ = _decode(image_path, want_pixels=False)
    mask_size, mask_mode, ids = _decode(mask_path, want_pixels=True)
    if mask_size != image_size:
        raise DataError(
            f"{mask_path}: mask size {mask_size[0]}x{mask_size[1]} differs from "
            f"image {image_path.name} size {image_size[0]}x{image_size[1]}"
        )
    if mask_mode not in ("L", "P", "I", "I;16") or ids is None:
        raise DataError(f"{mask_path}: mask must be single-channel (instance ids), got mode {mask_mode}")
    count = _count_instances(ids)
    if count == 0:
        raise DataError(f"{mask_path}: mask has no instances (all pixels are background 0)")
    return image_size[1], image_size[0], count


def _count_instances(ids: np.ndarray) -> int:
    if ids.dtype == np.uint8:
        present = np.bincount(ids.ravel(), minlength=256)[1:]  # much faster than unique for 8 bit
        return int((present > 0).sum())
    values = np.unique(ids)
    return int((values != 0).sum())
