"""The sweep's storage: a local folder into which Ray links each reported checkpoint instead of copying it.

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

import os
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs

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


def checkpoint_staging(experiment_dir: Path) -> Path:
    """Where trials write a checkpoint before reporting it: inside the sweep folder, so on its disk."""
    return experiment_dir / STAGING_FOLDER
