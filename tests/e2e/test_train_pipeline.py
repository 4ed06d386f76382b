"""fetch → weights → split → train of README's smoke study (tests/e2e/conftest.py: its DVC experiment
trained them), then experiments on the train stage alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from study_copy import run

# On one xdist worker with the smoke test, so that the smoke study is built once (tests/e2e/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke-study")]


def test_dvc_repro_trains_logs_and_is_then_up_to_date(smoke_study: Path):
    study = smoke_study  # DVC trained it (in the experiment smoke); its params.yaml holds profiles/smoke.yaml's values
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
    again = run(["dvc", "repro", "train"], study).stdout
    assert "Running stage" not in again

    client = MlflowClient(tracking_uri=f"sqlite:///{study}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("pedtune")
    (mlrun,) = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")  # lr: profiles/smoke.yaml's
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["train.lr"] == "0.01" and mlrun.data.params["model.arch"].startswith("maskrcnn")
    assert mlrun.data.tags["dataset_hash"] == split["dataset_hash"] and mlrun.data.tags["git_commit"]
    steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, "bbox_mAP")]
    assert steps == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"train.json", "history.csv", "model.pt"} <= artifacts

    # An experiment on one training param (README's `dvc exp run -S`) re-runs train only, and
    # DVC's experiment, params and metrics views compare it with the committed baseline.
    run(["git", "add", "-A"], study)
    run(["git", "-c", "user.email=ci@pedtune", "-c", "user.name=ci", "commit", "-qm", "baseline"], study)
    ran = run(["dvc", "exp", "run", "train", "-S", "train.lr=0.005"], study).stdout
    assert "Running stage 'train'" in ran
    assert not any(f"Running stage '{stage}'" in ran for stage in ("fetch", "weights", "split"))
    params_diff = json.loads(run(["dvc", "params", "diff", "--json"], study).stdout)
    lr_change = params_diff["params.yaml"]["train.lr"]
    assert (lr_change["old"], lr_change["new"]) == (0.01, 0.005)
    metrics_diff = json.loads(run(["dvc", "metrics", "diff", "--all", "--json"], study).stdout)
    assert {"bbox_mAP", "segm_mAP", "wall_time_s"} <= set(metrics_diff["metrics/train.json"])
    experiments = [
        exp for entry in json.loads(run(["dvc", "exp", "show", "--json"], study).stdout)
        for exp in entry.get("experiments") or [] if exp.get("name")
    ]
    assert len(experiments) == 1, experiments
    (revision,) = experiments[0]["revs"]
    data = revision["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.005
    assert data["metrics"]["metrics/train.json"]["data"]["epochs"] == 2

    # An experiment DVC runs in a temporary copy of the repository (--temp, or queued) logs its
    # MLflow run to this repository's store, not to the copy's, which DVC deletes.
    # Each run names the DVC experiment it belongs to (tests/e2e/test_coco_study.py: none for `dvc repro`).
    run(["dvc", "exp", "run", "--temp", "--name", "lr-002", "train", "-S", "train.lr=0.02"], study)
    by_lr = {r.data.params["train.lr"]: r.data.tags
             for r in client.search_runs([experiment.experiment_id], "tags.stage = 'train'")}
    assert sorted(by_lr) == ["0.005", "0.01", "0.02"]
    assert by_lr["0.01"]["dvc_experiment"] == "smoke"
    assert by_lr["0.005"]["dvc_experiment"] == experiments[0]["name"]
    assert by_lr["0.02"]["dvc_experiment"] == "lr-002"
