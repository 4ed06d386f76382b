"""README's smoke run, exactly as README.md writes it, in a throw-away copy of the study."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from study_copy import REPO, run

pytestmark = pytest.mark.slow


def readme_block(containing: str) -> str:
    """The fenced shell block of README.md that contains ``containing`` (there must be one)."""
    blocks = re.findall(r"^```(?:bash|sh|console)?\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"README.md has {len(found)} code blocks with {containing!r}"
    return found[0]


def test_the_smoke_run_as_readme_gives_it_is_a_dvc_experiment(study: Path):
    # The study copy, but with the shipped params.yaml and profiles: what a fresh clone holds.
    shutil.copy(REPO / "params.yaml", study / "params.yaml")
    shutil.copytree(REPO / "profiles", study / "profiles")
    run(["git", "add", "-A"], study)
    run(["git", "-c", "user.email=ci@pedtune", "-c", "user.name=ci", "commit", "-qm", "shipped params"], study)
    committed = (study / "params.yaml").read_text()

    block = readme_block("pedtune profile smoke")
    run(["bash", "-euo", "pipefail", "-c", block], study, timeout=1500)

    report = (study / "results/evaluate/report.md").read_text()
    assert "Initial vs tuned configuration" in report
    experiments = [
        exp for entry in json.loads(run(["dvc", "exp", "show", "--json"], study).stdout)
        for exp in entry.get("experiments") or [] if exp.get("name") == "smoke"
    ]
    assert len(experiments) == 1, experiments
    (revision,) = experiments[0]["revs"]
    data = revision["data"]
    assert data["params"]["params.yaml"]["data"]["data"]["source"] == "synthetic"
    assert data["metrics"]["metrics/tune.json"]["data"]["num_trials"] == 3
    assert "verdict" in data["metrics"]["metrics/evaluate.json"]["data"]
    # params.yaml's history is untouched: the profile lives in the experiment, not in a commit.
    assert run(["git", "log", "--format=%s", "--", "params.yaml"], study).stdout.split("\n")[0] == "shipped params"
    assert run(["git", "show", "HEAD:params.yaml"], study).stdout == committed
