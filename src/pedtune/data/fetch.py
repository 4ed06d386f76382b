"""Get PennFudanPed onto disk, checked, whole or not at all.

Four sources (``data.source``): the official ``url``, a local ``zip``, an already
extracted ``dir``, or a ``synthetic`` set. Whatever the source, the result is validated
(every image has a decodable mask of the same size with at least one instance) before it
replaces ``dest``, so a half-downloaded or corrupt dataset never reaches training.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO, Protocol

import numpy as np
from PIL import Image

from pedtune import console
from pedtune.config.schema import DataConfig
from pedtune.data.synthetic import write_synthetic_dataset
from pedtune.errors import DataError
from pedtune.io import atomic_path

FOLDERS = ("PNGImages", "PedMasks", "Annotation")
MASK_SUFFIX = "_mask.png"
CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 60.0

LOCAL_COPY_HINT = (
    "To use a local copy instead, download PennFudanPed.zip on a machine with internet access "
    "and set `data.source: zip` and `data.local_path: /path/to/PennFudanPed.zip` in params.yaml, "
    "or extract it and set `data.source: dir` with `data.local_path: /path/to/PennFudanPed`."
)


@dataclass(frozen=True)
class DatasetSummary:
    num_images: int
    num_instances: int
    stems: tuple[str, ...]


log = console.get(__name__)


# --------------------------------------------------------------------------- download


class _Progress(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


class _PlainProgress:
    """Without a terminal (logs, CI): a line every 10 %, or every 10 MiB if the size is unknown."""

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.done, self._next = total, desc, 0, 0

    def update(self, n: int) -> None:
        self.done += n
        step = self.total // 10 if self.total else 10 * CHUNK
        if self.done >= self._next:
            pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            log.info(f"{self.desc}: {self.done / 2**20:.1f} MiB{pct}")
            self._next = self.done + max(step, 1)

    def close(self) -> None:
        pass


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int | None, desc: str, enabled: bool) -> _Progress:
    if not enabled or console.quiet():
        return _NoProgress()
    if not console.is_terminal():
        return _PlainProgress(total, desc)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)


def download(url: str, dest: Path, expected_size: int | None, progress: bool = True) -> None:
    """Download ``url`` to ``dest`` via a temporary sibling file, so ``dest`` is never partial."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            received = _stream(url, out, expected_size, progress, desc=dest.name)
        if expected_size is not None and received != expected_size:
            raise DataError(
                f"download of {url} failed: got {received} bytes, expected {expected_size} "
                f"(connection cut short?). {LOCAL_COPY_HINT}"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
        # URLError covers refused/unresolvable hosts and HTTP errors; OSError covers
        # timeouts and resets mid-transfer; ValueError an unusable URL.
        raise DataError(f"download of {url} failed: {_reason(exc)}. {LOCAL_COPY_HINT}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, expected_size: int | None, progress: bool, desc: str) -> int:
    received = 0
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else expected_size
        bar = _progress_bar(total, desc, progress)
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
    return received


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- archive


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_archive(path: Path, md5: str, size_bytes: int | None) -> None:
    """Check size (cheap, catches truncation) then md5; ``size_bytes=None`` skips the size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"archive {path} not found")
    hint = (
        "If you built this archive yourself, set data.md5 (and data.size_bytes, or null to skip "
        "the size check) to its own values."
    )
    if size_bytes is not None:
        actual_size = path.stat().st_size
        if actual_size != size_bytes:
            raise DataError(
                f"archive {path}: size mismatch: expected {size_bytes} bytes, got {actual_size} bytes. {hint}"
            )
    actual_md5 = md5sum(path)
    if actual_md5 != md5.lower():
        raise DataError(f"archive {path}: md5 mismatch: expected {md5}, got {actual_md5}. {hint}")


def _unsafe_reason(info: zipfile.ZipInfo, dest: Path) -> str | None:
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PurePosixPath(name).is_absolute():
        return "has an absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "escapes the destination (..)"
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        return "escapes the destination"
    return None


def safe_extract(zip_path: Path, dest_dir: Path) -> None:
    """Extract ``zip_path`` into ``dest_dir`` after checking every member name.

    All members are checked before anything is written, so a malicious archive leaves no
    files at all; corrupt data (bad CRC, truncated stream) is reported as a DataError.
    """
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                reason = _unsafe_reason(info, dest)
                if reason:
                    raise DataError(f"{zip_path}: refusing member '{info.filename}': it {reason}")
                if info.flag_bits & 0x1:  # zipfile reads these only with a password
                    raise DataError(f"{zip_path}: member '{info.filename}' is encrypted; extract the archive "
                                    "yourself and use data.source: dir")
            for info in members:
                _extract_member(zf, info, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DataError(f"{zip_path}: corrupt or truncated zip archive: {exc}") from exc


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    target = dest / info.filename
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # zf.open checks the CRC at the end of the stream: a damaged member raises here.
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{zf.filename}: member '{info.filename}' is corrupt: {exc}") from exc


def find_dataset_root(extracted_dir: Path) -> Path:
    """The folder holding ``PNGImages/``: ``extracted_dir`` itself or one level (or two) below."""
    extracted_dir = Path(extracted_dir)
    if (extracted_dir / "PNGImages").is_dir():
        return extracted_dir
    candidates = sorted(
        p.parent
        for pattern in ("*/PNGImages", "*/*/PNGImages")
        for p in extracted_dir.glob(pattern)
        if p.is_dir() and "__MACOSX" not in p.parts
    )
    if not candidates:
        raise DataError(f"{extracted_dir}: no PNGImages/ folder found (is this the PennFudanPed archive?)")
    if len(candidates) > 1:
        listed = ", ".join(str(c) for c in candidates)
        raise DataError(f"{extracted_dir}: several dataset folders found ({listed}); expected one")
    return candidates[0]


# --------------------------------------------------------------------------- validation


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

    num_instances = 0
    for stem in stems:
        image_path = root / "PNGImages" / f"{stem}.png"
        num_instances += _check_pair(image_path, root / "PedMasks" / f"{stem}{MASK_SUFFIX}")
    return DatasetSummary(num_images=len(stems), num_instances=num_instances, stems=tuple(stems))


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


def _check_pair(image_path: Path, mask_path: Path) -> int:
    """Validate one image/mask pair; return its number of instances."""
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
    return count


def _count_instances(ids: np.ndarray) -> int:
    if ids.dtype == np.uint8:
        present = np.bincount(ids.ravel(), minlength=256)[1:]  # much faster than unique for 8 bit
        return int((present > 0).sum())
    values = np.unique(ids)
    return int((values != 0).sum())


# --------------------------------------------------------------------------- hashing


def dataset_hash(root: Path) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: a stable tag for a dataset's content."""
    root = Path(root)
    digest = hashlib.sha256()
    for rel, path in sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()):
        digest.update(f"{rel}\0{_sha256_file(path)}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- fetch


def fetch_dataset(cfg: DataConfig, dest: Path, work_dir: Path | None = None) -> DatasetSummary:
    """Materialise the dataset described by ``cfg`` at ``dest`` (PennFudanPed's folders, or with
    ``data.format: coco`` the layout of :mod:`pedtune.data.coco_fetch`).

    ``dest`` is replaced atomically: on any failure a previous ``dest`` is left untouched
    and no temporary folder remains. ``work_dir``, if given, keeps the downloaded archive
    (``source: url``) so a later fetch can reuse it after re-checking its md5.
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
                from pedtune.data.coco_fetch import fetch_coco  # it imports this module's archive helpers

                summary = fetch_coco(cfg, tmp, scratch, work_dir)
            elif cfg.source == "url":
                summary = _from_url(cfg, tmp, scratch, work_dir)
            elif cfg.source == "zip":
                summary = _from_zip(cfg, tmp, scratch)
            elif cfg.source == "dir":
                summary = _from_dir(cfg, tmp)
            elif cfg.source == "synthetic":
                summary = _from_synthetic(cfg, tmp)
            else:  # unreachable while the schema's Literal and this list agree
                raise DataError(f"unknown data.source '{cfg.source}'")
    return summary


def _from_url(cfg: DataConfig, tmp: Path, scratch: Path, work_dir: Path | None) -> DatasetSummary:
    return _extract_and_validate(archive_from_url(cfg, scratch, work_dir), tmp, scratch, cfg.expected_images)


def archive_from_url(cfg: DataConfig, scratch: Path, work_dir: Path | None) -> Path:
    """``cfg.url``'s archive, downloaded (or reused from ``work_dir``) and verified."""
    name = Path(urllib.parse.urlsplit(cfg.url).path).name or "PennFudanPed.zip"
    archive = (Path(work_dir) if work_dir is not None else scratch) / name
    if archive.is_file() and _archive_ok(archive, cfg):
        log.info(f"using cached archive {archive}")
    else:
        log.info(f"downloading {cfg.url}")
        download(cfg.url, archive, cfg.size_bytes, progress=True)
        log.info(f"verifying {archive.name} (md5 {cfg.md5})")
        try:
            verify_archive(archive, cfg.md5, cfg.size_bytes)
        except DataError:
            archive.unlink(missing_ok=True)  # a bad download must not be picked up as cache
            raise
    return archive


def _archive_ok(archive: Path, cfg: DataConfig) -> bool:
    try:
        verify_archive(archive, cfg.md5, cfg.size_bytes)
    except DataError as exc:
        log.info(f"cached archive rejected, downloading again: {exc}")
        return False
    return True


def _from_zip(cfg: DataConfig, tmp: Path, scratch: Path) -> DatasetSummary:
    return _extract_and_validate(local_archive(cfg), tmp, scratch, cfg.expected_images)


def local_archive(cfg: DataConfig) -> Path:
    """``data.local_path``'s zip, verified."""
    archive = Path(cfg.local_path).expanduser()
    if archive.is_dir():
        raise DataError(
            f"data.local_path {archive} is a folder; use `data.source: dir` for an extracted copy"
        )
    if not archive.is_file():
        raise DataError(f"data.local_path {archive}: zip file not found")
    log.info(f"verifying {archive} (md5 {cfg.md5})")
    verify_archive(archive, cfg.md5, cfg.size_bytes)
    return archive


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


__all__ = [
    "DatasetSummary",
    "dataset_hash",
    "download",
    "fetch_dataset",
    "find_dataset_root",
    "md5sum",
    "safe_extract",
    "validate_dataset",
    "verify_archive",
]
