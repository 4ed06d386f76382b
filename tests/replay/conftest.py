from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder as the working directory: stage paths are relative to it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
