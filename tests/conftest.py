"""Shared fixtures: a tiny synthetic PennFudanPed and, where present, the real copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedtune.config.schema import SyntheticConfig
from pedtune.data.synthetic import write_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_PENNFUDAN = REPO_ROOT.parent / "shared" / "data" / "PennFudanPed"


@pytest.fixture
def synthetic_cfg() -> SyntheticConfig:
    """Small enough to write in well under a second, big enough for a 3-way split."""
    return SyntheticConfig(num_images=6, height=48, width=64, max_instances=3, seed=0)


@pytest.fixture
def synthetic_root(tmp_path: Path, synthetic_cfg: SyntheticConfig) -> Path:
    """A fresh synthetic dataset folder (the equivalent of ``PennFudanPed/``) per test."""
    root = tmp_path / "synthetic" / "PennFudanPed"
    write_synthetic_dataset(synthetic_cfg, root)
    return root


@pytest.fixture
def real_pennfudan() -> Path:
    """The real dataset copy at ``../shared/data/PennFudanPed``; skips the test if absent."""
    if not (REAL_PENNFUDAN / "PNGImages").is_dir():
        pytest.skip(f"real PennFudanPed copy not found at {REAL_PENNFUDAN}")
    return REAL_PENNFUDAN
