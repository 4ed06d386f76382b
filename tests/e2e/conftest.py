from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from study_copy import REPO, make_study, run


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "study")


def readme_block(containing: str) -> str:
    """The fenced shell block of README.md that contains ``containing`` (there must be one)."""
    blocks = re.findall(r"^```(?:bash|sh|console)?\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"README.md has {len(found)} code blocks with {containing!r}"
    return found[0]


@pytest.fixture(scope="session")
def smoke_study_ran(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study copy with the shipped params.yaml and profiles (what a fresh clone holds), committed, on
    which README's smoke block ran: the whole study as the DVC experiment ``smoke``. Built once a
    session (each run of it starts ~15 Python processes); the tests that read it, through ``smoke_study``,
    carry ``pytest.mark.xdist_group("smoke-study")``, so that they run on the one worker that builds it."""
    study = make_study(tmp_path_factory.mktemp("smoke") / "study")
    shutil.copy(REPO / "params.yaml", study / "params.yaml")
    shutil.copytree(REPO / "profiles", study / "profiles")
    run(["git", "add", "-A"], study)
    run(["git", "-c", "user.email=ci@pedtune", "-c", "user.name=ci", "commit", "-qm", "shipped params"], study)
    run(["bash", "-euo", "pipefail", "-c", readme_block("pedtune profile smoke")], study, timeout=1500)
    return study


@pytest.fixture
def smoke_study(smoke_study_ran: Path, tmp_path: Path) -> Path:
    """This test's own copy of the smoke study, so that what one test changes (params, experiments,
    MLflow runs) no other sees, in whatever order they run."""
    copy = tmp_path / "study"
    shutil.copytree(smoke_study_ran, copy, symlinks=True)
    _move_mlflow_paths(copy / "mlruns" / "mlflow.db", smoke_study_ran, copy)
    return copy


def _move_mlflow_paths(database: Path, old: Path, new: Path) -> None:
    """MLflow's store holds the artifact folders as absolute paths: point the copy's at its own."""
    with sqlite3.connect(database) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                if column[2].upper().startswith(("VARCHAR", "TEXT")):
                    connection.execute(f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?)',
                                       (str(old), str(new)))
    connection.close()
