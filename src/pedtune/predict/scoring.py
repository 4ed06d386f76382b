"""``pedtune predict --annotations``: the predicted images' ground truth, matched by file name, and their COCO AP.

The annotation file must list the model's categories (the same ids and names): predictions in
one dataset's ids scored against another's would count every detection as a false positive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pycocotools import mask as mask_utils

from pedtune.data.coco import CocoIndex, index_coco
from pedtune.data.coco_samples import to_rle
from pedtune.engine.coco_eval import coco_index, coco_metrics
from pedtune.errors import DataError


@dataclass(frozen=True)
class Annotations:
    index: CocoIndex
    image_ids: list[int]  # the annotation file's image id of each input image, in input order

    def score(self, results: Sequence[dict[str, Any]], scored_ids: set[int]) -> dict[str, float]:
        """COCO AP of ``results`` on the images in ``scored_ids`` (those decoded and predicted)."""
        images, annotations = [], []
        for image_id in sorted(scored_ids):
            image = self.index.images[image_id]
            images.append({"id": image.id, "file_name": image.file_name, "height": image.height, "width": image.width})
            for ann in self.index.annotations[image_id]:
                area = ann.get("area")
                if area is None:  # COCOeval needs each region's area; a hand-made file may leave it out
                    area = float(mask_utils.area(to_rle(ann["segmentation"], image.height, image.width)))
                annotations.append({**ann, "area": area, "iscrowd": ann.get("iscrowd", 0)})
        categories = [{"id": cat_id, "name": name} for cat_id, name in self.index.categories.items()]
        truth = coco_index({"images": images, "annotations": annotations, "categories": categories})
        return coco_metrics(truth, results, per_category=True)


def match_annotations(path: Path, images: Sequence[Path], model_categories: Mapping[int, str]) -> Annotations:
    """The annotation file at ``path`` checked against the model's categories (id -> name) and matched to
    ``images`` by file name (the input's path ends with the entry's ``file_name``)."""
    index = index_coco(path)
    if index.categories != dict(model_categories):
        raise DataError(f"{path}: its categories {index.categories} differ from the model's {dict(model_categories)} "
                        "(ids and names must match to score the predictions)")
    by_name: dict[str, list[int]] = {}
    for image in index.images.values():
        by_name.setdefault(PurePosixPath(image.file_name).name, []).append(image.id)
    image_ids = []
    for image in images:
        candidates = [image_id for image_id in by_name.get(image.name, [])
                      if Path(image).resolve().as_posix().endswith("/" + index.images[image_id].file_name)
                      or image.name == index.images[image_id].file_name]
        if len(candidates) != 1:
            what = "lists no image" if not candidates else f"lists {len(candidates)} images"
            raise DataError(f"{path}: {what} named {image.name} (to score {image}, its 'images' must list it once)")
        image_ids.append(candidates[0])
    return Annotations(index, image_ids)
