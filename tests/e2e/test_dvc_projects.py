"""The study's DVC project lists only the study's stages; recordings/ is a DVC project of its own
whose record and compare stages stay visible and runnable from there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from study_copy import REPO, run

pytestmark = pytest.mark.slow  # DVC commands in a copy of the repository

SHIPPED = ("dvc.yaml", "params.yaml", ".gitignore", ".dvc/config", ".dvc/.gitignore", "recordings/dvc.yaml",
           "recordings/.dvc/config", "recordings/.dvc/.gitignore", "recordings/.dvcignore")


def test_a_fresh_clone_shows_the_study_stages_at_the_root_and_the_benchmark_ones_in_benchmarks(tmp_path: Path):
    clone = tmp_path / "clone"
    for name in SHIPPED:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, clone / name)
    run(["git", "init", "-q"], clone)
    run(["git", "add", "-A"], clone)
    run(["git", "-c", "user.email=ci@pedtune", "-c", "user.name=ci", "commit", "-qm", "clone"], clone)

    study = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    listed = set(json.loads(run(["dvc", "status", "--json"], clone).stdout))
    assert listed and listed <= study, listed  # nothing run yet: each study stage with missing outputs
    benchmark = set(json.loads(run(["dvc", "status", "--json"], clone / "recordings").stdout))
    assert benchmark == {"record", "compare"}, benchmark
    assert '"record" -> "compare"' in run(["dvc", "dag", "--dot"], clone / "recordings").stdout
