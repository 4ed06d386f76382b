"""An MLflow server that is not running stops a stage at once, before any data is read."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_tracking_server_fails_fast_with_a_clear_message(tmp_path: Path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["mlflow"]["tracking_uri"] = f"http://127.0.0.1:{_closed_port()}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("train", "tune", "evaluate"):
        result = subprocess.run(
            [sys.executable, "-m", "pedtune", stage], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1, result.stderr
        assert "is not reachable" in result.stderr and "tracking_uri" in result.stderr
    # It stopped before reading the split or starting Ray: nothing was written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
