"""`dvc status` of the training stages ignores a comment in presentation code and sees one in trial code.

A study copy gets stand-in files for every dep and out of train, tune and evaluate (nothing is
trained); `dvc commit` records their hashes in dvc.lock, so `dvc status` compares exactly the
declared deps against what is on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from study_copy import make_study, run

pytestmark = pytest.mark.slow  # DVC's own commands: tens of seconds on a busy 2-core machine
STAGES = ["train", "tune", "evaluate"]


def _stand_ins(study: Path) -> None:
    stages = yaml.safe_load((study / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for stage in ("split", "weights", "fetch", *STAGES):
        for entry in stages[stage].get("outs", []) + stages[stage].get("metrics", []):
            name = next(iter(entry)) if isinstance(entry, dict) else entry
            path = study / name
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"stand-in for {name}\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "stand-in.txt").write_text(f"stand-in for {name}\n")
    (study / "results/tune/best_params.yaml").write_text("lr: 0.01\n")


def _status(study: Path) -> str:
    return run(["dvc", "status", *STAGES], study).stdout


def test_a_comment_in_presentation_code_leaves_dvc_status_clean(tmp_path: Path):
    study = make_study(tmp_path / "study")
    _stand_ins(study)
    run(["dvc", "commit", "-f", "-q", *STAGES], study)
    assert "up to date" in _status(study)
    for name in ("engine/estimate.py", "tune/progress.py", "evaluate/readme.py", "console.py"):
        with (study / "src/pedtune" / name).open("a", encoding="utf-8") as file:
            file.write("\n# a comment\n")
    assert "up to date" in _status(study)
    with (study / "src/pedtune/engine/train.py").open("a", encoding="utf-8") as file:
        file.write("\n# a change to fit\n")
    changed = _status(study)
    assert all(f"{stage}:" in changed for stage in STAGES), changed
