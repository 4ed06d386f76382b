"""The whole study (fetch → split → train → tune → evaluate) on a generated multi-class COCO dataset,
with the smoke profile's model settings, in a throw-away copy of the study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from study_copy import make_study, run

from pedtune.config.schema import SyntheticConfig
from pedtune.data.coco_synthetic import write_synthetic_coco

pytestmark = pytest.mark.slow

NAMES = ("square", "triangle", "disc")


def test_the_study_runs_on_a_coco_dataset_and_reports_each_category(tmp_path: Path):
    # As small as the study runs: 12 images at 48x64 px (every category in each split part, a crowd region,
    # negatives), 1-epoch trials, 2 of them, 1-epoch evaluation runs on 2 seeds (the fewest an interval
    # needs), one picture.
    annotation = write_synthetic_coco(SyntheticConfig(num_images=12, height=48, width=64, max_instances=3,
                                                      categories=3), tmp_path / "mine")
    study = make_study(tmp_path / "study", {
        "data": {"format": "coco", "source": "dir", "local_path": str(annotation.parent / "images"),
                 "annotations": str(annotation), "expected_images": None},
        "model": {"min_size": 48, "max_size": 64},
        "train": {"epochs": 1},
        "tune": {"num_samples": 2},
        "evaluate": {"num_pictures": 1, "seeds": [1, 2]}})
    run(["dvc", "repro"], study, timeout=1500)

    assert (study / "data/dataset/annotations/all.json").read_bytes() == annotation.read_bytes()
    split = json.loads((study / "data/split.json").read_text())
    assert sum(split["counts"].values()) == 12
    model = torch.load(study / "models/model.pt", weights_only=True)
    assert list(model["categories"].values()) == list(NAMES)
    report = (study / "results/evaluate/report.md").read_text()
    for name in NAMES:
        assert f"| {name} |" in report
    assert sorted(p.name for p in (study / "results/evaluate/pictures").iterdir())

    client = MlflowClient(tracking_uri=f"sqlite:///{study}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("pedtune")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'evaluate'")
    logged = {key for r in runs for key in r.data.metrics}
    assert any(key.startswith("test_bbox_AP/") for key in logged) and any(
        key.startswith("test_segm_AP/") for key in logged)
    # A run names the DVC experiment it belongs to: none under `dvc repro` (tests/e2e/test_train_pipeline.py
    # checks the names `dvc exp run` gives).
    every = client.search_runs([experiment.experiment_id])
    assert {r.data.tags.get("stage") for r in every} >= {"train", "tune", "evaluate"}
    assert not [r.data.tags["dvc_experiment"] for r in every if "dvc_experiment" in r.data.tags]

    # An edit to the JSON, fetched again, is an edit to the fetch stage's outputs: the split, which reads the
    # dataset's index, is out of date.
    raw = json.loads(annotation.read_text())
    raw["annotations"] = raw["annotations"][:-1]
    annotation.write_text(json.dumps(raw))
    run(["dvc", "repro", "-f", "fetch"], study)
    status = run(["dvc", "status", "split"], study).stdout
    assert "data/index.json" in status and "modified" in status, status
