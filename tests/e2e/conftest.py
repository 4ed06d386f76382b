from __future__ import annotations

from pathlib import Path

import pytest
from study_copy import make_study


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "study")
