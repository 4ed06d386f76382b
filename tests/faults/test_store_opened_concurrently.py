"""Stages that open a new local MLflow store at the same moment (queued DVC experiments started
together) all get it, and it stays usable: MLflow creates its tables on first use, and two
processes doing that at once used to leave the SQLite file half-migrated for good."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OPENER = """
import sys
from pedtune.config.schema import MlflowConfig
from pedtune.tracking.store import open_store
config = MlflowConfig(tracking_uri=sys.argv[1], artifact_location=sys.argv[2], experiment="race")
print("ready", flush=True)
sys.stdin.readline()  # imports done everywhere: open together
print(open_store(config).experiment_id)
"""


def _open_together(db: Path, artifacts: Path, processes: int) -> list[tuple[int, str, str]]:
    children = [
        subprocess.Popen([sys.executable, "-c", OPENER, f"sqlite:///{db}", str(artifacts)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=120)
        outcomes.append((child.returncode, out.strip(), err[-600:]))
    return outcomes


def test_a_new_store_opened_by_several_stages_at_once(tmp_path: Path):
    db, artifacts = tmp_path / "mlruns" / "mlflow.db", tmp_path / "mlruns" / "artifacts"
    outcomes = _open_together(db, artifacts, 3)
    assert all(code == 0 for code, _, _ in outcomes), [err for code, _, err in outcomes if code]
    assert len({out for _, out, _ in outcomes}) == 1  # one experiment, not three
    ((code, out, err),) = _open_together(db, artifacts, 1)
    assert code == 0 and out == outcomes[0][1], err
