"""Files and folders written by a stage appear whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pedtune import io
from pedtune.io import atomic_path, write_text


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_is_swapped_in_whole(tmp_path: Path):
    target = tmp_path / "results"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert _tree(target) == {"new.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no backup, no temporary folder


def test_a_failed_swap_leaves_the_previous_folder_in_place(tmp_path: Path, monkeypatch):
    target = tmp_path / "results"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace, calls = os.replace, []

    def replace_failing_the_swap(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:  # the new folder onto the target, after the old one was moved aside
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", replace_failing_the_swap)
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("new")
    assert _tree(target) == {"old.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_write_text_leaves_nothing_when_it_fails(tmp_path: Path):
    target = tmp_path / "metrics" / "train.json"
    write_text(target, "{}\n")
    with pytest.raises(TypeError):
        write_text(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "{}\n" and sorted(p.name for p in target.parent.iterdir()) == ["train.json"]
