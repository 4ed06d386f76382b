"""The dataset's zip: downloaded or read locally, checked against its size and md5, extracted without escaping its
folder, the dataset found in it."""

from __future__ import annotations

import shutil
import urllib.parse
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from pedtune import console
from pedtune.config.schema import DataConfig
from pedtune.data.checksum import md5sum
from pedtune.data.download import CHUNK, download
from pedtune.errors import DataError

log = console.get(__name__)


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
