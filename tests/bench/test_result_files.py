"""Result files name no folder of the machine they ran on, and the table they make is the same
from a ``git archive`` export as from the checkout: "latest" is each file's ``measured_at``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULT_FILES = sorted((REPO / "bench" / "results").rglob("*.json"))


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.relative_to(REPO / "bench" / "results").as_posix())
def test_a_result_file_holds_repository_relative_paths_and_when_it_was_measured(path: Path) -> None:
    result = json.loads(path.read_text())
    assert not [s for s in _strings(result) if s.startswith(("/", "~")) or ":\\" in s]
    assert isinstance(result["measured_at"], int)


def test_the_writer_makes_paths_repository_relative_and_keeps_only_the_name_of_others(tmp_path: Path) -> None:
    from bench import common

    written = common.portable({"args": {"params": str(common.REPO / "profiles" / "cpu-quick.yaml"),
                                        "json": str(tmp_path / "out.json"), "steps": "6"},
                               "data": "synthetic", "runs": [{"folder": str(tmp_path)}]})
    assert written == {"args": {"params": "profiles/cpu-quick.yaml", "json": "out.json", "steps": "6"},
                       "data": "synthetic", "runs": [{"folder": tmp_path.name}]}


def test_a_result_without_measured_at_is_refused(tmp_path: Path) -> None:
    from bench import run_all

    (tmp_path / "train_step.json").write_text(json.dumps({"benchmark": "train_step", "machine": {}}))
    with pytest.raises(SystemExit, match="no measured_at field"):
        run_all.table(tmp_path)


def test_the_table_generated_in_a_git_archive_export_is_the_committed_one(tmp_path: Path) -> None:
    inside = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=REPO, capture_output=True, text=True)
    if inside.returncode != 0 or Path(inside.stdout.strip()) != REPO:
        pytest.skip("not a git checkout: nothing to export")
    archive = tmp_path / "export.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), "HEAD", "bench", "docs", "src"],
                   cwd=REPO, check=True)
    export = tmp_path / "export"
    with tarfile.open(archive) as tar:
        tar.extractall(export, filter="data")
    pages = [export / "docs" / "performance.md", export / "docs" / "methodology.md"]
    committed = [page.read_text(encoding="utf-8") for page in pages]
    env = {**os.environ, "PYTHONPATH": f"{export / 'src'}{os.pathsep}{export}"}
    subprocess.run([sys.executable, "-m", "bench.run_all", "--table-only"], cwd=export, env=env, check=True,
                   capture_output=True, text=True)
    assert [page.read_text(encoding="utf-8") for page in pages] == committed
