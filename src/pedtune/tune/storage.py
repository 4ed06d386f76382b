"""The sweep's storage: a local folder (or a mount all nodes share), or an object store such as S3.

:func:`open_storage` turns ``tune.storage_path`` into one pyarrow filesystem and a path on it;
every read and write of the sweep's state (Tune's own, the wall-time ledger, pruning) goes
through that pair. A URI (``s3://bucket/sweeps``, ``gs://…``) is resolved by pyarrow, which
takes an S3-compatible endpoint (MinIO, Ceph, moto) from the standard AWS settings
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` or the AWS config file) and credentials
from the usual chain. Checkpoints bound for an object store are written to a temporary
folder on the trial's node and uploaded by Ray.

Local storage is a folder into which Ray links each reported checkpoint instead of copying it.

Ray persists a reported checkpoint by copying its folder into the trial's storage
(``StorageContext.persist_current_checkpoint`` → ``pyarrow.fs.copy_files``), a large part of
each report for ResNet-50's checkpoints (docs/performance.md). When source and destination are
the same pyarrow filesystem,
``copy_files`` asks that filesystem to copy each file; :func:`linking_filesystem` answers with
a hard link, so a checkpoint staged on the storage's own disk (:func:`checkpoint_staging`)
is persisted without moving its bytes. Sharing them is safe: a trial writes every checkpoint
into a fresh folder and never writes a saved file again. Where a link is impossible (another
disk, a filesystem without hard links) the file is copied, as Ray would have done.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.fs as pafs

from pedtune.paths import from_root

STAGING_FOLDER = ".checkpoint-staging"


class _LinkingLocalHandler(pafs.FileSystemHandler):
    """The local filesystem, except that copying a file makes a hard link where it can."""

    def __init__(self) -> None:
        self._local = pafs.LocalFileSystem()

    # Equal handlers make equal filesystems, which is what lets copy_files call copy_file.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LinkingLocalHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __reduce__(self) -> tuple:
        return (_LinkingLocalHandler, ())

    def copy_file(self, src: str, dest: str) -> None:
        try:
            os.link(src, dest)
        except OSError:  # another device, no hard links there, or dest exists: copy (overwrites)
            self._local.copy_file(src, dest)

    def get_type_name(self) -> str:
        return "pedtune-linking-local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the filesystem's root")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict | None) -> pyarrow.NativeFile:
        return self._local.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: dict | None) -> pyarrow.NativeFile:
        return self._local.open_append_stream(path, metadata=metadata)


def linking_filesystem() -> pafs.FileSystem:
    """The sweep's storage filesystem, for ``RunConfig``, ``Tuner.restore`` and reported checkpoints."""
    return pafs.PyFileSystem(_LinkingLocalHandler())


def is_uri(storage_path: str) -> bool:
    return "://" in storage_path


@dataclass(frozen=True)
class SweepStorage:
    """Where sweeps live: ``root`` on ``filesystem`` (prefix-stripped, as Ray's RunConfig takes it)."""

    filesystem: pafs.FileSystem
    root: str
    display: str  # as the user wrote it, made absolute: for messages
    local: bool  # a folder (on this machine or a shared mount): checkpoints are hard-linked into it

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def describe(self, *parts: str) -> str:
        return posixpath.join(self.display, *parts)

    def exists(self, path: str) -> bool:
        return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def names(self, folder: str) -> list[str]:
        """The entries directly in ``folder`` (none if it does not exist)."""
        selector = pafs.FileSelector(folder, allow_not_found=True, recursive=False)
        return [info.base_name for info in self.filesystem.get_file_info(selector)]

    def read_json(self, path: str) -> Any:
        with self.filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read().decode("utf-8"))

    def write_json(self, path: str, data: Any) -> None:
        """Whole or not at all: a local file is written beside and renamed, an object is put in one request."""
        payload = json.dumps(data, indent=2).encode("utf-8")
        target = f"{path}.tmp" if self.local else path
        with self.filesystem.open_output_stream(target) as stream:
            stream.write(payload)
        if target != path:
            self.filesystem.move(target, path)

    def delete_dir(self, path: str) -> None:
        try:
            self.filesystem.delete_dir(path)
        except FileNotFoundError:
            pass


def open_storage(storage_path: str) -> SweepStorage:
    """``tune.storage_path`` as a filesystem: a URI through pyarrow, a path from the repository root."""
    if is_uri(storage_path):
        filesystem, root = pafs.FileSystem.from_uri(storage_path.rstrip("/"))
        return SweepStorage(filesystem, root, storage_path.rstrip("/"), local=False)
    folder = str(from_root(storage_path))
    return SweepStorage(linking_filesystem(), folder, folder, local=True)


def checkpoint_staging(storage: SweepStorage, experiment: str) -> Path | None:
    """Where trials write a checkpoint before reporting it.

    Local storage: inside the sweep folder, so on its disk, to be linked into place. An object
    store: None, a temporary folder on the trial's own node, uploaded by Ray.
    """
    return Path(storage.path(experiment, STAGING_FOLDER)) if storage.local else None
