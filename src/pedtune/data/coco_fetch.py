"""A COCO dataset (``data.format: coco``) fetched, checked and laid out for the later stages.

The fetch stage's folder then holds ``images/`` (each image at its ``file_name``) and
``annotations/``: ``all.json``, or ``train.json``, ``val.json`` and ``test.json`` when the
dataset ships its own split. The JSON files are copied byte for byte, so DVC sees an edit
to them as an edit to the stage's output.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pedtune import console
from pedtune.config.schema import AnnotationFiles, DataConfig
from pedtune.data.archive import archive_from_url, local_archive, safe_extract
from pedtune.data.coco import CocoImage, CocoIndex, check_has_masks, check_image_files, check_same_categories, index_coco
from pedtune.data.split import PARTS
from pedtune.errors import DataError

IMAGES = "images"
ANNOTATIONS = "annotations"
WHOLE = "all"  # the annotation file of a dataset without a split of its own

log = console.get(__name__)


def is_coco_layout(root: Path) -> bool:
    return (Path(root) / ANNOTATIONS).is_dir()


@dataclass(frozen=True)
class CocoDataset:
    """The validated annotation files of a dataset: one (``all``) or one per split part."""

    images_dir: Path
    parts: dict[str, CocoIndex]  # "all", or "train", "val", "test"

    @property
    def categories(self) -> dict[int, str]:
        return next(iter(self.parts.values())).categories

    def entries(self) -> dict[str, tuple[CocoIndex, CocoImage]]:
        """Every image by its key (the name the split file uses), with the file that lists it."""
        found: dict[str, tuple[CocoIndex, CocoImage]] = {}
        for index in self.parts.values():
            for image in index.images.values():
                if image.key in found:
                    raise DataError(f"{index.path}: image {image.file_name} is also listed in "
                                    f"{found[image.key][0].path}; a split's parts must not share images")
                found[image.key] = (index, image)
        return dict(sorted(found.items()))


def open_dataset(images_dir: Path, annotation_files: dict[str, Path]) -> CocoDataset:
    """Index and cross-check ``annotation_files`` (JSON only, no image opened)."""
    parts = {part: index_coco(path) for part, path in annotation_files.items()}
    check_same_categories(parts.values())
    check_has_masks(parts.values())
    dataset = CocoDataset(images_dir=Path(images_dir), parts=parts)
    dataset.entries()  # refuses an image listed in two parts
    return dataset


def read_dataset(root: Path) -> CocoDataset:
    """The dataset the fetch stage laid out at ``root``."""
    root = Path(root)
    folder = root / ANNOTATIONS
    if (folder / f"{WHOLE}.json").is_file():
        files = {WHOLE: folder / f"{WHOLE}.json"}
    elif all((folder / f"{part}.json").is_file() for part in PARTS):
        files = {part: folder / f"{part}.json" for part in PARTS}
    else:
        raise DataError(f"{folder}: expected {WHOLE}.json or train.json, val.json and test.json "
                        "(run the fetch stage: dvc repro fetch)")
    return open_dataset(root / IMAGES, files)


def _sources(cfg: DataConfig, base: Path) -> dict[str, Path]:
    if isinstance(cfg.annotations, AnnotationFiles):
        return {part: base / getattr(cfg.annotations, part) for part in PARTS}
    return {WHOLE: base / cfg.annotations}


def _located(cfg: DataConfig, scratch: Path, work_dir: Path | None) -> tuple[Path, dict[str, Path]]:
    """The images folder and the annotation files the config names, extracted first if archived."""
    if cfg.source == "dir":
        images_dir = Path(cfg.local_path).expanduser()
        if not images_dir.is_dir():
            raise DataError(f"data.local_path {images_dir}: images folder not found")
        return images_dir, _sources(cfg, Path("."))
    if cfg.source == "synthetic":
        from pedtune.data.coco_synthetic import write_synthetic_coco

        syn = cfg.synthetic
        log.info(f"writing {syn.num_images} synthetic images with {syn.categories} categories "
                 f"({syn.width}x{syn.height}, seed {syn.seed})")
        annotation = write_synthetic_coco(syn, scratch / "synthetic")
        return annotation.parent / IMAGES, {WHOLE: annotation}
    archive = archive_from_url(cfg, scratch, work_dir) if cfg.source == "url" else local_archive(cfg)
    extracted = scratch / "extracted"
    log.info(f"extracting {archive.name}")
    safe_extract(archive, extracted)
    images_dir = extracted / cfg.images
    if not images_dir.is_dir():
        raise DataError(f"{archive}: no folder '{cfg.images}' inside (data.images names the images folder "
                        "inside the archive)")
    return images_dir, _sources(cfg, extracted)


def fetch_coco(cfg: DataConfig, tmp: Path, scratch: Path, work_dir: Path | None) -> CocoDataset:
    """Locate, validate and copy a COCO dataset into ``tmp`` (renamed onto the stage's folder after);
    the dataset as validated (its annotation files where they were read)."""
    images_dir, files = _located(cfg, scratch, work_dir)
    log.info(f"validating {', '.join(str(path) for path in files.values())}")
    dataset = open_dataset(images_dir, files)
    entries = dataset.entries()
    expected = cfg.expected_images if cfg.source != "synthetic" else cfg.synthetic.num_images
    if expected is not None and len(entries) != expected:
        raise DataError(f"{', '.join(str(p) for p in files.values())}: {len(entries)} images listed, expected "
                        f"{expected} (data.expected_images sets the count, null accepts any)")
    log.info(f"checking {len(entries)} image files in {images_dir}")
    check_image_files(images_dir, [image for _, image in entries.values()], workers=os.cpu_count() or 1)
    (tmp / ANNOTATIONS).mkdir(parents=True)
    for part, path in files.items():
        shutil.copyfile(path, tmp / ANNOTATIONS / f"{part}.json")
    for _, image in entries.values():
        target = tmp / IMAGES / image.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(images_dir / image.file_name, target)
    return dataset
