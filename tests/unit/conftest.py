from __future__ import annotations

from pathlib import Path

import pytest

from pedtune.data.dataset import SampleStore, list_stems


@pytest.fixture
def synthetic_store(synthetic_root: Path) -> SampleStore:
    return SampleStore(synthetic_root, list_stems(synthetic_root), min_size=48, max_size=64)


@pytest.fixture
def raw_params() -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
