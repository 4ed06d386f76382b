"""A COCO instance-segmentation JSON, checked entry by entry and indexed by image.

Every refusal names the file and the entry (``annotations[12] (id 40)``), and happens
before anything is copied or trained: what passes here decodes in the loader and scores in
COCOeval. Image files are not opened here (:func:`check_image_files` does that, in
parallel), so indexing a large JSON costs only its parse and one pass over its entries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from pedtune.errors import DataError

REQUIRED = ("images", "annotations", "categories")
# A box may overhang its image by rounding (COCO's own boxes do, by hundredths of a pixel).
EDGE_TOLERANCE = 0.5


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    height: int
    width: int

    @property
    def key(self) -> str:
        """The name the split file uses: ``file_name`` without its suffix (``FudanPed00001``)."""
        return str(PurePosixPath(self.file_name).with_suffix(""))


@dataclass(frozen=True)
class CocoIndex:
    """One validated COCO JSON: images by id, their annotations, categories in id order."""

    path: Path
    images: dict[int, CocoImage]
    annotations: dict[int, list[dict[str, Any]]]  # image id -> its annotations, crowd ones too
    categories: dict[int, str]  # category id -> name, ascending ids

    @property
    def num_instances(self) -> int:
        return sum(1 for anns in self.annotations.values() for ann in anns if not ann.get("iscrowd", 0))

    def image_categories(self, image_id: int) -> set[int]:
        return {ann["category_id"] for ann in self.annotations[image_id] if not ann.get("iscrowd", 0)}


def read_json(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as file:
            raw = json.load(file)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON: {error}") from None
    except (UnicodeDecodeError, OSError) as error:
        raise DataError(f"{path}: cannot read: {error}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations and categories")
    return raw


def _entry(path: Path, section: str, position: int, entry: Any) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{path}: {section}[{position}]" + (f" (id {ident})" if ident is not None else "")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def index_coco(path: Path, raw: Mapping[str, Any] | None = None) -> CocoIndex:
    """Validate the COCO JSON at ``path`` (or its already parsed ``raw``) and index it."""
    path = Path(path)
    raw = read_json(path) if raw is None else raw
    for section in REQUIRED:
        if not isinstance(raw.get(section), list):
            raise DataError(f"{path}: missing '{section}' (a COCO instance JSON holds a list of {section})")
    categories = _categories(path, raw["categories"])
    images = _images(path, raw["images"])
    annotations: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}
    seen: set[int] = set()
    for position, ann in enumerate(raw["annotations"]):
        where = _entry(path, "annotations", position, ann)
        if not isinstance(ann, dict) or not _int(ann.get("id")):
            raise DataError(f"{where}: an annotation needs an integer 'id'")
        if ann["id"] in seen:
            raise DataError(f"{where}: duplicate annotation id {ann['id']}")
        seen.add(ann["id"])
        image = images.get(ann.get("image_id"))  # type: ignore[arg-type]
        if image is None:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} names no image in 'images'")
        if ann.get("category_id") not in categories:
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} names no category in 'categories'")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{where}: iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}")
        _check_box(where, ann.get("bbox"), image)
        _check_segmentation(where, ann.get("segmentation"), image)
        annotations[image.id].append(ann)
    return CocoIndex(path=path, images=images, annotations=annotations, categories=categories)


def _categories(path: Path, entries: list[Any]) -> dict[int, str]:
    categories: dict[int, str] = {}
    for position, cat in enumerate(entries):
        where = _entry(path, "categories", position, cat)
        if not isinstance(cat, dict) or not _int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise DataError(f"{where}: a category needs an integer 'id' and a 'name'")
        if cat["id"] in categories:
            raise DataError(f"{where}: duplicate category id {cat['id']}")
        categories[cat["id"]] = cat["name"]
    if not categories:
        raise DataError(f"{path}: 'categories' is empty")
    return dict(sorted(categories.items()))


def _images(path: Path, entries: list[Any]) -> dict[int, CocoImage]:
    images: dict[int, CocoImage] = {}
    keys: dict[str, int] = {}
    for position, entry in enumerate(entries):
        where = _entry(path, "images", position, entry)
        if not isinstance(entry, dict) or not _int(entry.get("id")):
            raise DataError(f"{where}: an image needs an integer 'id'")
        if entry["id"] in images:
            raise DataError(f"{where}: duplicate image id {entry['id']}")
        name = entry.get("file_name")
        if not isinstance(name, str) or not name or PurePosixPath(name).is_absolute() or ".." in name.split("/"):
            raise DataError(f"{where}: 'file_name' must be a path relative to the images folder, got {name!r}")
        height, width = entry.get("height"), entry.get("width")
        if not (_int(height) and _int(width) and height > 0 and width > 0):
            raise DataError(f"{where}: 'height' and 'width' must be positive integers, got {height!r} x {width!r}")
        image = CocoImage(id=entry["id"], file_name=name, height=height, width=width)
        if image.key in keys:
            raise DataError(f"{where}: file {name} is listed twice (also image id {keys[image.key]})")
        keys[image.key] = image.id
        images[image.id] = image
    if not images:
        raise DataError(f"{path}: 'images' is empty")
    return images


def _check_box(where: str, bbox: Any, image: CocoImage) -> None:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise DataError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: bbox {bbox} has width or height <= 0")
    if x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > image.width + EDGE_TOLERANCE \
            or y + h > image.height + EDGE_TOLERANCE:
        raise DataError(f"{where}: bbox {bbox} lies outside its image {image.file_name} "
                        f"({image.width} x {image.height})")


def _check_segmentation(where: str, segmentation: Any, image: CocoImage) -> None:
    if isinstance(segmentation, list):
        if not segmentation:
            raise DataError(f"{where}: no segmentation (an empty list): Mask R-CNN trains on masks")
        for number, polygon in enumerate(segmentation):
            if not (isinstance(polygon, list) and all(_number(v) for v in polygon) and len(polygon) % 2 == 0):
                raise DataError(f"{where}: polygon {number} must be a flat list [x1, y1, x2, y2, ...]")
            if len(polygon) < 6:
                raise DataError(f"{where}: polygon {number} has {len(polygon) // 2} points; a polygon needs at least 3")
        return
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if size != [image.height, image.width]:
            raise DataError(f"{where}: RLE size {size!r} differs from its image {image.file_name} "
                            f"([height, width] = [{image.height}, {image.width}])")
        if isinstance(counts, list):  # uncompressed: run lengths that must cover the image exactly
            if not all(_int(c) and c >= 0 for c in counts) or sum(counts) != image.height * image.width:
                raise DataError(f"{where}: uncompressed RLE counts must be non-negative integers summing to "
                                f"height x width = {image.height * image.width}")
        elif not isinstance(counts, str) or not counts:
            raise DataError(f"{where}: RLE 'counts' must be a list of run lengths or a compressed string")
        return
    if segmentation is None:
        raise DataError(f"{where}: no 'segmentation': Mask R-CNN trains on masks, so every annotation needs one "
                        "(a polygon list or an RLE)")
    raise DataError(f"{where}: 'segmentation' must be a polygon list or an RLE dict, got {type(segmentation).__name__}")


def check_same_categories(indexes: Iterable[CocoIndex]) -> dict[int, str]:
    """The categories the parts of a shipped split share; they must list the same ones."""
    indexes = list(indexes)
    first = indexes[0]
    for other in indexes[1:]:
        if other.categories != first.categories:
            raise DataError(f"{other.path}: its categories {other.categories} differ from those of "
                            f"{first.path} ({first.categories}); the parts of a split must share them")
    return first.categories


def check_has_masks(indexes: Iterable[CocoIndex]) -> None:
    """Mask R-CNN learns masks: a dataset whose objects are all crowd regions has none to learn."""
    indexes = list(indexes)
    if not any(index.num_instances for index in indexes):
        raise DataError(f"{', '.join(str(i.path) for i in indexes)}: no annotated object with a mask "
                        "(only crowd regions or none at all): Mask R-CNN needs instance masks to train on")


def _check_image_file(images_dir: Path, image: CocoImage) -> str | None:
    path = images_dir / image.file_name
    if not path.is_file():
        return f"{path}: image file missing (images[id {image.id}] file_name {image.file_name})"
    try:
        with Image.open(path) as im:
            im.load()  # the full decode: a truncated file fails now, not in training
            size = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"{path}: cannot decode image (images[id {image.id}]): {error}"
    if size != (image.width, image.height):
        return (f"{path}: image is {size[0]} x {size[1]} but the JSON says {image.width} x {image.height} "
                f"(images[id {image.id}])")
    return None


def check_image_files(images_dir: Path, images: Iterable[CocoImage], workers: int = 4) -> None:
    """Decode every listed image (threads: PIL decodes without the GIL); the first problem is raised."""
    images = sorted(images, key=lambda image: image.file_name)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for problem in pool.map(lambda image: _check_image_file(Path(images_dir), image), images):
            if problem:
                raise DataError(problem)
