"""Samples of a COCO dataset (the fetch stage's ``images/`` + ``annotations/``).

Masks are decoded by ``pycocotools.mask`` (polygons, compressed and uncompressed RLE), images
by ``torchvision.io.decode_image`` in RGB mode (greyscale and RGBA converted, as
``CocoDetection``'s ``.convert("RGB")`` does). torchvision's ``CocoDetection`` wrapped by
``wrap_dataset_for_transforms_v2`` is not used: in 0.29.1 it returns an image without objects
with no ``boxes``/``masks``/``labels`` at all, keeps crowd regions among the training masks,
gives raw category ids as labels, and indexes the whole JSON again with its own
``pycocotools.coco.COCO`` in every store. The fetch stage validated the annotation files and
wrote their index (:mod:`pedtune.data.index`); the reader takes the images from the index and
each image's annotations from the files (parsed, not checked again) and decodes them with the
same pycocotools calls the wrapper makes.

Category ids are remapped to contiguous labels 1..K in ascending id order; crowd regions
(``iscrowd: 1``) are left out of the training targets and kept in the ground truth, where
COCOeval ignores detections matched to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.io import ImageReadMode, decode_image, read_file

from pedtune.data.coco import read_json
from pedtune.data.index import DatasetIndex, IndexedImage, annotation_file
from pedtune.data.sample import Decoded, Sample, resized
from pedtune.errors import DataError


def to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One COCO segmentation (polygons, compressed or uncompressed RLE) as a compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


class CocoReader:
    def __init__(self, root: Path, index: DatasetIndex) -> None:
        self.root = Path(root)
        self.images: dict[str, IndexedImage] = index.images
        self.label_of = {category: label for label, category in index.category_ids.items()}
        self.categories = index.labels
        self.annotations: dict[str, list[dict[str, Any]]] = {key: [] for key in self.images}
        for part in index.annotation_parts:
            key_of = {image.id: key for key, image in self.images.items() if image.part == part}
            path = annotation_file(self.root, part)
            for ann in read_json(path)["annotations"]:
                if ann["image_id"] not in key_of:  # the files changed after the fetch stage indexed them
                    raise DataError(f"{path}: annotation {ann['id']} names image {ann['image_id']}, which the "
                                    "dataset's index lacks (run the fetch stage again: dvc repro fetch)")
                self.annotations[key_of[ann["image_id"]]].append(ann)

    def missing(self, stems: Sequence[str]) -> list[str]:
        return [stem for stem in stems if stem not in self.images]

    def _decode(self, stem: str) -> tuple[Decoded, torch.Tensor]:
        image = self.images[stem]
        path = self.root / image.file_name
        try:
            pixels = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as error:
            raise DataError(f"cannot decode {path}: {error}") from None
        annotations = self.annotations[stem]
        if annotations:
            rles = [to_rle(a["segmentation"], image.height, image.width) for a in annotations]
            # decode gives [H, W, N] in Fortran order; moved to [N, H, W] for torch.
            masks = torch.from_numpy(np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))).bool()
        else:
            masks = torch.zeros((0, image.height, image.width), dtype=torch.bool)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in annotations], dtype=torch.int64)
        crowd = torch.tensor([bool(a.get("iscrowd", 0)) for a in annotations], dtype=torch.bool)
        return Decoded(image=pixels, masks=masks, labels=labels), crowd

    def sample(self, stem: str, min_size: int, max_size: int) -> Sample:
        decoded, crowd = self._decode(stem)
        objects = Decoded(image=decoded.image, masks=decoded.masks[~crowd], labels=decoded.labels[~crowd])
        return resized(stem, objects, min_size, max_size)

    def truth(self, stem: str) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        """The JSON's own annotations (crowd ones too), with labels for category ids."""
        image = self.images[stem]
        annotations = []
        for ann in self.annotations[stem]:
            segmentation = ann["segmentation"]
            area = ann.get("area")
            if area is None:  # optional in the format; COCOeval's area ranges need it
                area = float(mask_utils.area(to_rle(segmentation, image.height, image.width)))
            annotations.append({"category_id": self.label_of[ann["category_id"]], "bbox": list(ann["bbox"]),
                                "area": float(area), "segmentation": segmentation,
                                "iscrowd": int(ann.get("iscrowd", 0))})
        return (image.height, image.width), annotations
