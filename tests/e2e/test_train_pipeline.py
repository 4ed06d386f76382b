"""`dvc repro` of fetch → weights → split → train in a fresh copy of the study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from study_copy import run

pytestmark = pytest.mark.slow


def test_dvc_repro_trains_logs_and_is_then_up_to_date(study: Path):
    run(["dvc", "repro", "train"], study)

    metrics = json.loads((study / "metrics/train.json").read_text())
    assert {"bbox_mAP", "segm_mAP", "bbox_AP50", "segm_AP75", "epochs", "wall_time_s"} <= set(metrics)
    assert metrics["epochs"] == 2 and all(0.0 <= metrics[k] <= 1.0 for k in ("bbox_mAP", "segm_mAP"))
    rows = list(csv.DictReader((study / "plots/train/history.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    checkpoint = torch.load(study / "models/model.pt", weights_only=True)
    assert checkpoint["model_config"]["arch"] == "maskrcnn_mobilenet_v3_large_fpn"
    split = json.loads((study / "data/split.json").read_text())
    assert split["counts"] == {"train": 8, "val": 2, "test": 2}

    status = run(["dvc", "status", "train"], study).stdout  # train and the stages it depends on
    assert "up to date" in status, status
    second = run(["dvc", "repro", "train"], study).stdout
    assert "Running stage" not in second

    client = MlflowClient(tracking_uri=f"sqlite:///{study}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("pedtune")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["train.lr"] == "0.005" and mlrun.data.params["model.arch"].startswith("maskrcnn")
    assert mlrun.data.tags["dataset_hash"] == split["dataset_hash"] and mlrun.data.tags["git_commit"]
    steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, "bbox_mAP")]
    assert steps == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"train.json", "history.csv", "model.pt"} <= artifacts

    # A changed training param re-runs train only; the data stages stay cached.
    params = (study / "params.yaml").read_text().replace("lr: 0.005", "lr: 0.01", 1)
    (study / "params.yaml").write_text(params)
    diff = run(["dvc", "params", "diff"], study).stdout
    assert "train.lr" in diff and "0.01" in diff
    status = run(["dvc", "status", "train"], study).stdout
    assert "train:" in status and "fetch:" not in status and "split:" not in status
