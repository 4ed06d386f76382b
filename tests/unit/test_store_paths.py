"""Where a relative MLflow store lands: the repository DVC runs the stage for, else the cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedtune.config.schema import MlflowConfig
from pedtune.tracking.store import open_store

RELATIVE = MlflowConfig(tracking_uri="sqlite:///mlruns/mlflow.db", artifact_location="mlruns/artifacts")


def _artifact_root(store) -> str:
    return store.client.get_experiment(store.experiment_id).artifact_location


def test_relative_store_is_under_dvc_root_when_dvc_runs_the_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # As in `dvc exp run --temp`: the stage runs in a copy, DVC_ROOT names the original.
    original, copy = tmp_path / "repo", tmp_path / "tmp-exp-copy"
    original.mkdir(), copy.mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(original))
    store = open_store(RELATIVE)
    assert store.tracking_uri == f"sqlite:///{original / 'mlruns/mlflow.db'}"
    assert (original / "mlruns/mlflow.db").is_file() and not (copy / "mlruns").exists()
    assert _artifact_root(store) == (original / "mlruns/artifacts").as_uri()


def test_relative_store_is_under_the_cwd_outside_dvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = open_store(RELATIVE)
    assert store.tracking_uri == f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}"
    assert _artifact_root(store) == (tmp_path / "mlruns/artifacts").as_uri()


def test_absolute_store_ignores_dvc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))
    config = MlflowConfig(tracking_uri=f"sqlite:///{tmp_path}/db/mlflow.db", artifact_location=str(tmp_path / "art"))
    store = open_store(config)
    assert store.tracking_uri == f"sqlite:///{tmp_path}/db/mlflow.db"
    assert _artifact_root(store) == (tmp_path / "art").as_uri()
    assert not (tmp_path / "elsewhere").exists()
