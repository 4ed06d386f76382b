"""Checksums: of a file (md5, sha256) and of a dataset folder's content."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def md5sum(path: Path) -> str:
    return _file_digest(path, "md5")


def sha256sum(path: Path) -> str:
    return _file_digest(path, "sha256")


def dataset_hash(root: Path) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: a stable tag for a dataset's content."""
    root = Path(root)
    digest = hashlib.sha256()
    for rel, path in sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()):
        digest.update(f"{rel}\0{_file_digest(path, 'sha256')}\n".encode())
    return digest.hexdigest()
