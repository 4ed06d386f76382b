"""Get PennFudanPed onto disk, checked, whole or not at all.

Four sources (``data.source``): the official ``url``, a local ``zip``, an already
extracted ``dir``, or a ``synthetic`` set. Whatever the source, the result is validated
(every image has a decodable mask of the same size with at least one instance) before it
replaces ``dest``, so a half-downloaded or corrupt dataset never reaches training. What the
checks found is the dataset's index (:mod:`pedtune.data.index`), written beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pedtune import console
from pedtune.config.schema import DataConfig
from pedtune.data.archive import archive_from_url, find_dataset_root, local_archive, safe_extract
from pedtune.data.checksum import dataset_hash
from pedtune.data.coco_fetch import fetch_coco
from pedtune.data.index import DatasetIndex, coco_index, pennfudan_index, write_index
from pedtune.data.synthetic import write_synthetic_dataset
from pedtune.data.validation import DatasetSummary, validate_dataset
from pedtune.errors import DataError
from pedtune.io import atomic_path

log = console.get(__name__)


def fetch_dataset(cfg: DataConfig, dest: Path, work_dir: Path | None = None,
                  index_file: Path | None = None) -> DatasetIndex:
    """Materialise the dataset described by ``cfg`` at ``dest`` (PennFudanPed's folders, or with
    ``data.format: coco`` the layout of :mod:`pedtune.data.coco_fetch`); its index is returned and,
    with ``index_file``, written there.

    ``dest`` is replaced atomically: on any failure a previous ``dest`` (and index) is left
    untouched and no temporary folder remains. ``work_dir``, if given, keeps the downloaded
    archive (``source: url``) so a later fetch can reuse it after re-checking its md5.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"fetching dataset (source: {cfg.source}) into {dest}")
    # Scratch space (download, extraction) sits next to dest so the final move is a rename;
    # it is removed on success and failure alike.
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.work.", dir=dest.parent) as scratch_name:
        scratch = Path(scratch_name)
        with atomic_path(dest) as tmp:
            if cfg.format == "coco":
                index = coco_index(fetch_coco(cfg, tmp, scratch, work_dir), dataset_hash(tmp))
            else:
                index = pennfudan_index(_fetch_pennfudan(cfg, tmp, scratch, work_dir), dataset_hash(tmp))
            if index_file is not None:
                # Written before the folder replaces dest: a failure here leaves both as they were.
                write_index(index, index_file)
    return index


def _fetch_pennfudan(cfg: DataConfig, tmp: Path, scratch: Path, work_dir: Path | None) -> DatasetSummary:
    if cfg.source == "url":
        return _from_url(cfg, tmp, scratch, work_dir)
    if cfg.source == "zip":
        return _from_zip(cfg, tmp, scratch)
    if cfg.source == "dir":
        return _from_dir(cfg, tmp)
    if cfg.source == "synthetic":
        return _from_synthetic(cfg, tmp)
    raise DataError(f"unknown data.source '{cfg.source}'")  # unreachable while the schema's Literal and this agree


def _from_url(cfg: DataConfig, tmp: Path, scratch: Path, work_dir: Path | None) -> DatasetSummary:
    return _extract_and_validate(archive_from_url(cfg, scratch, work_dir), tmp, scratch, cfg.expected_images)






def _from_zip(cfg: DataConfig, tmp: Path, scratch: Path) -> DatasetSummary:
    return _extract_and_validate(local_archive(cfg), tmp, scratch, cfg.expected_images)




def _extract_and_validate(archive: Path, tmp: Path, scratch: Path, expected: int | None) -> DatasetSummary:
    extracted = scratch / "extracted"
    log.info(f"extracting {archive.name}")
    safe_extract(archive, extracted)
    root = find_dataset_root(extracted)
    log.info("validating images and masks")
    summary = validate_dataset(root, expected_count=expected)
    os.replace(root, tmp)  # same filesystem: a rename, not a copy
    return summary


def _from_dir(cfg: DataConfig, tmp: Path) -> DatasetSummary:
    source = Path(cfg.local_path).expanduser()
    if not source.is_dir():
        raise DataError(f"data.local_path {source}: folder not found")
    root = find_dataset_root(source)
    log.info(f"validating {root}")
    summary = validate_dataset(root, expected_count=cfg.expected_images)
    log.info(f"copying {root}")
    shutil.copytree(root, tmp)
    return summary


def _from_synthetic(cfg: DataConfig, tmp: Path) -> DatasetSummary:
    syn = cfg.synthetic
    log.info(f"writing {syn.num_images} synthetic images ({syn.width}x{syn.height}, seed {syn.seed})")
    write_synthetic_dataset(syn, tmp)
    log.info("validating images and masks")
    return validate_dataset(tmp, expected_count=syn.num_images)

