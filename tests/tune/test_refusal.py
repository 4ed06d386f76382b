"""A refused sweep in a Ray of the stage's own (tests/tune/test_driver.py runs its sweeps in one Ray of the module's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from tune_fakes import fake_fit
from tune_study import build_study, sweep_runs

from pedtune.errors import ClusterError
from pedtune.stages.tune import run_tune


def test_resources_this_machine_lacks_fail_at_once(study: Path):
    config = build_study(study, {"tune": {"resources_per_trial": {"cpu": 4096, "gpu": 0}}})
    with pytest.raises(ClusterError, match="asks for 4096 CPU"):
        run_tune(config, fit_fn=fake_fit)
    assert not ray.is_initialized()
    assert not sweep_runs(study).parents  # refused before any MLflow run was opened
