"""Checksums: of a file (md5, sha256) and of a dataset folder's content."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pedtune.data.download import CHUNK


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_hash(root: Path) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: a stable tag for a dataset's content."""
    root = Path(root)
    digest = hashlib.sha256()
    for rel, path in sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()):
        digest.update(f"{rel}\0{_sha256_file(path)}\n".encode())
    return digest.hexdigest()
