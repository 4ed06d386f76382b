"""PennFudanPed written as a COCO instance-segmentation dataset (``pedtune export-coco``).

Nothing is lost on the way: each instance's mask is stored as a compressed RLE of the mask
file's pixels, its box as the native loader draws it (the mask's tight box, pixel edges, so
a one-pixel-wide instance keeps a positive width), the images as the same files under their
own names, so the split's names are the same. Trained from the export (``data.format: coco``,
``source: dir``), the study draws the same split and gives the same metrics as from the
folders (tests/data/test_export.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pedtune import console
from pedtune.data.dataset import decode_pennfudan, image_path, list_stems, truth_from_masks
from pedtune.data.validation import validate_dataset
from pedtune.errors import DataError
from pedtune.io import atomic_path

ANNOTATION_FILE = "annotations.json"
IMAGES = "images"

log = console.get(__name__)


def export_coco(root: Path, dest: Path) -> Path:
    """Write the PennFudanPed folder ``root`` as ``dest/images/*.png`` + ``dest/annotations.json``."""
    root, dest = Path(root), Path(dest)
    if (root / "annotations").is_dir():
        raise DataError(f"{root} already holds a COCO dataset (annotations/); export-coco reads PennFudanPed's layout")
    validate_dataset(root)
    stems = list_stems(root)
    images, annotations = [], []
    with atomic_path(dest) as tmp:
        (tmp / IMAGES).mkdir(parents=True)
        for number, stem in enumerate(stems, start=1):
            decoded = decode_pennfudan(root, stem)
            height, width = (int(v) for v in decoded.image.shape[1:])
            name = f"{stem}.png"
            shutil.copyfile(image_path(root, stem), tmp / IMAGES / name)
            images.append({"id": number, "file_name": name, "height": height, "width": width})
            for entry in truth_from_masks(decoded.masks, decoded.labels):
                annotations.append({"id": len(annotations) + 1, "image_id": number, **entry})
        categories = [{"id": 1, "name": "person", "supercategory": "person"}]
        (tmp / ANNOTATION_FILE).write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}), encoding="utf-8")
    console.summary(log, f"{len(images)} images, {len(annotations)} pedestrians as COCO (masks as RLE)",
                    wrote=[dest / IMAGES, dest / ANNOTATION_FILE])
    return dest / ANNOTATION_FILE
