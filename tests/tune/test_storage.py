"""The sweep's storage links reported checkpoints into place instead of copying them."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from ray import tune
from ray.train._internal.storage import StorageContext

from pedtune.tune import storage
from pedtune.tune.storage import checkpoint_staging, linking_filesystem, open_storage


def staged_checkpoint(folder: Path) -> Path:
    (folder / "nested").mkdir(parents=True)
    (folder / "state.pt").write_bytes(os.urandom(4096))
    (folder / "nested" / "extra.json").write_text("{}")
    return folder


def test_ray_persists_a_staged_checkpoint_as_links_to_its_files(tmp_path: Path):
    # The path Ray takes for every tune.report(checkpoint=...): StorageContext.persist_current_checkpoint.
    context = StorageContext(storage_path=str(tmp_path / "storage"), experiment_dir_name="sweep",
                             storage_filesystem=linking_filesystem(), trial_dir_name="trial",
                             current_checkpoint_index=0)
    staged = staged_checkpoint(checkpoint_staging(open_storage(str(tmp_path / "storage")), "sweep") / "epoch-1")
    persisted = context.persist_current_checkpoint(tune.Checkpoint(staged, filesystem=linking_filesystem()))

    for name in ("state.pt", "nested/extra.json"):
        source, copy = staged / name, Path(persisted.path) / name
        assert copy.read_bytes() == source.read_bytes()
        assert os.path.samefile(copy, source), f"{name} was copied, not linked"
    data = (staged / "state.pt").read_bytes()
    for path in sorted(staged.rglob("*"), reverse=True):  # what TemporaryDirectory does after the report
        path.rmdir() if path.is_dir() else path.unlink()
    assert (Path(persisted.path) / "state.pt").read_bytes() == data


def test_a_file_that_cannot_be_linked_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def other_device(src: str, dest: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(storage.os, "link", other_device)
    staged = staged_checkpoint(tmp_path / "staged")
    fs = linking_filesystem()
    pafs.copy_files(str(staged), str(tmp_path / "persisted"), source_filesystem=fs, destination_filesystem=fs)

    copy = tmp_path / "persisted" / "state.pt"
    assert copy.read_bytes() == (staged / "state.pt").read_bytes()
    assert not os.path.samefile(copy, staged / "state.pt")


def test_the_filesystem_survives_pickling_as_ray_ships_it_to_workers():
    fs = pickle.loads(pickle.dumps(linking_filesystem()))
    assert fs.equals(linking_filesystem())
    assert not fs.equals(pafs.LocalFileSystem())
