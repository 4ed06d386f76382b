"""The validated index of the fetched dataset (``data/index.json``): what the fetch stage's checks found.

Per image: the key the split file uses, its file (relative to the dataset folder), its size, how
many objects its training sample holds and of which categories, and (COCO) its id and the
annotation file that lists it; per dataset: its format, categories and content hash. The fetch
stage writes it beside the dataset folder (its second output); the split and training stages read
it instead of checking the dataset again, and depend on it in dvc.yaml, so an edit DVC sees in the
dataset's files re-runs the fetch, whose new index re-runs the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pedtune.data.checksum import dataset_hash
from pedtune.data.coco_fetch import ANNOTATIONS, IMAGES, WHOLE, CocoDataset, is_coco_layout, read_dataset
from pedtune.data.split import PARTS, Split
from pedtune.data.validation import DatasetSummary, validate_dataset
from pedtune.errors import DataError
from pedtune.io import write_json

Format = Literal["pennfudan", "coco"]
PENNFUDAN_CATEGORIES = {1: "person"}


@dataclass(frozen=True)
class IndexedImage:
    key: str  # the name the split file uses (PennFudanPed's stem, a COCO file_name without its suffix)
    file_name: str  # relative to the dataset folder
    height: int
    width: int
    objects: int  # the instances its training sample holds (COCO: crowd regions left out)
    categories: tuple[int, ...]  # the category ids of those objects, ascending, once each
    part: str = WHOLE  # the annotation file that lists it: "all", or a shipped split's part
    id: int | None = None  # COCO: the image id in that file


@dataclass(frozen=True)
class DatasetIndex:
    format: Format
    categories: dict[int, str]  # category id -> name, ascending ids; model label = position + 1
    images: dict[str, IndexedImage]  # by key, in key order
    dataset_hash: str  # of the dataset folder's content (pedtune.data.checksum.dataset_hash)

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def num_instances(self) -> int:
        return sum(image.objects for image in self.images.values())

    @property
    def labels(self) -> dict[int, str]:
        """label (1..K, in ascending category id) -> name: the classes the model's heads predict."""
        return {label: name for label, name in enumerate(self.categories.values(), start=1)}

    @property
    def category_ids(self) -> dict[int, int]:
        """label -> category id (PennFudanPed: person, 1)."""
        return {label: category for label, category in enumerate(self.categories, start=1)}

    @property
    def annotation_parts(self) -> tuple[str, ...]:
        return tuple(sorted({image.part for image in self.images.values()}))

    @property
    def shipped_split(self) -> Split | None:
        """The split a COCO dataset ships (one annotation file per part), else None."""
        if set(self.annotation_parts) != set(PARTS):
            return None
        return Split(**{part: tuple(key for key, image in self.images.items() if image.part == part)
                        for part in PARTS})


def pennfudan_index(summary: DatasetSummary, content_hash: str) -> DatasetIndex:
    images = {stem: IndexedImage(key=stem, file_name=f"PNGImages/{stem}.png", height=height, width=width,
                                 objects=count, categories=(1,))
              for stem, (height, width, count) in zip(summary.stems, summary.shapes)}
    return DatasetIndex("pennfudan", dict(PENNFUDAN_CATEGORIES), images, content_hash)


def coco_index(dataset: CocoDataset, content_hash: str) -> DatasetIndex:
    part_of = {id(index): part for part, index in dataset.parts.items()}
    images = {}
    for key, (index, image) in dataset.entries().items():
        objects = [ann for ann in index.annotations[image.id] if not ann.get("iscrowd", 0)]
        images[key] = IndexedImage(key=key, file_name=f"{IMAGES}/{image.file_name}", height=image.height,
                                   width=image.width, objects=len(objects),
                                   categories=tuple(sorted({ann["category_id"] for ann in objects})),
                                   part=part_of[id(index)], id=image.id)
    return DatasetIndex("coco", dict(dataset.categories), images, content_hash)


def index_folder(root: Path) -> DatasetIndex:
    """Check a dataset folder laid out as the fetch stage lays it out, and index it (what the fetch
    stage writes; for code handed a folder without its index, such as the benchmarks)."""
    root = Path(root)
    if is_coco_layout(root):
        return coco_index(read_dataset(root), dataset_hash(root))
    return pennfudan_index(validate_dataset(root), dataset_hash(root))


def write_index(index: DatasetIndex, path: Path) -> None:
    write_json(path, {
        "format": index.format,
        "dataset_hash": index.dataset_hash,
        "categories": [{"id": category, "name": name, "label": label}
                       for label, (category, name) in enumerate(index.categories.items(), start=1)],
        "num_images": index.num_images,
        "num_instances": index.num_instances,
        "images": [{"key": image.key, "file_name": image.file_name, "height": image.height, "width": image.width,
                    "objects": image.objects, "categories": list(image.categories), "part": image.part,
                    **({"id": image.id} if image.id is not None else {})}
                   for image in index.images.values()],
    })


def read_index(path: Path) -> DatasetIndex:
    """The index the fetch stage wrote at ``path``."""
    path = Path(path)
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        images = {entry["key"]: IndexedImage(key=entry["key"], file_name=entry["file_name"],
                                             height=int(entry["height"]), width=int(entry["width"]),
                                             objects=int(entry["objects"]),
                                             categories=tuple(int(c) for c in entry["categories"]),
                                             part=entry["part"], id=entry.get("id"))
                  for entry in raw["images"]}
        categories = {int(entry["id"]): str(entry["name"]) for entry in raw["categories"]}
        index = DatasetIndex(raw["format"], categories, images, str(raw["dataset_hash"]))
    except FileNotFoundError:
        raise DataError(f"{path} not found: run the fetch stage first (dvc repro fetch)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(f"{path} is not a dataset index the fetch stage wrote ({type(error).__name__}: {error}); "
                        "run the fetch stage again (dvc repro fetch)") from None
    if index.format not in ("pennfudan", "coco") or not images or list(categories) != sorted(categories):
        raise DataError(f"{path} is not a dataset index the fetch stage wrote (format {index.format!r}, "
                        f"{len(images)} images); run the fetch stage again (dvc repro fetch)")
    return index


def annotation_file(root: Path, part: str) -> Path:
    """Where the fetch stage copied the COCO annotation file of ``part`` ("all", or a split part)."""
    return Path(root) / ANNOTATIONS / f"{part}.json"
