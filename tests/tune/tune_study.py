"""A tiny study on synthetic data for tune tests, and read-back helpers for what a sweep left behind."""

from __future__ import annotations

import csv
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.cloudpickle
import tune_fakes
import yaml
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient
from study_copy import merge

from pedtune import paths
from pedtune.config import StudyConfig, validate
from pedtune.data.fetch import fetch_dataset
from pedtune.model.weights import save_weights
from pedtune.stages.split import run_split

REPO = Path(__file__).resolve().parents[2]
TINY: dict[str, Any] = {
    # 48x64 px and few regions per image: the sweeps' trials train and score the real model, cheaply.
    "data": {"source": "synthetic", "num_workers": 0,
             "synthetic": {"num_images": 12, "height": 48, "width": 64, "max_instances": 2}},
    "model": {"arch": "maskrcnn_mobilenet_v3_large_fpn", "weights": "none", "min_size": 48, "max_size": 64,
              "detections_per_img": 5, "box_batch_size_per_image": 32, "rpn_test_proposals": 100},
    "train": {"epochs": 2, "warmup_epochs": 0.5, "device": "cpu", "batch_size": 4},
    "tune": {"num_samples": 3, "max_concurrent": 2, "resources_per_trial": {"cpu": 1, "gpu": 0},
             "asha": {"grace_period": 1, "reduction_factor": 2},
             "search_space": [
                 {"param": "train.lr", "type": "qloguniform", "lower": 0.0001, "upper": 0.1, "q": 0.0001},
                 {"param": "train.batch_size", "type": "choice", "values": [4, 8]},
                 {"param": "train.weight_decay", "type": "loguniform", "lower": 0.00001, "upper": 0.001},
             ]},
}

# Ray workers cannot import this test folder: ship the fake training function by value.
ray.cloudpickle.register_pickle_by_value(tune_fakes)


def study_params(root: Path, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = merge(merge(raw, deepcopy(TINY)), deepcopy(changes or {}))
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{root}/mlruns/mlflow.db"
    return raw


def build_study(root: Path, changes: dict[str, Any] | None = None) -> StudyConfig:
    """Data, split, weights and params.yaml of a tiny study in ``root`` (the working directory)."""
    raw = study_params(root, changes)
    config = validate(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    fetch_dataset(config.data, root / paths.DATA_ROOT, index_file=root / paths.DATA_INDEX)
    run_split(config)
    save_weights(config.model, root / paths.PRETRAINED)
    return config


@dataclass(frozen=True)
class SweepRuns:
    """The MLflow side of a sweep: its parent run(s) and the trial runs under them."""

    client: MlflowClient
    parents: list[Run]
    children: list[Run]

    def metric_steps(self, run: Run, key: str) -> list[int]:
        return sorted(m.step for m in self.client.get_metric_history(run.info.run_id, key))


def sweep_runs(root: Path) -> SweepRuns:
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("pedtune")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("stage") == "tune"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return SweepRuns(client, parents, children)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_states(client: MlflowClient) -> dict[str, tuple]:
    """Every run of the "pedtune" experiment as it stands: status, end time, tags, params and each metric's
    history; equal before and after a command that must leave the runs as they were."""
    experiment = client.get_experiment_by_name("pedtune")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], max_results=1000, run_view_type=ViewType.ALL)
    return {
        run.info.run_id: (
            run.info.status, run.info.end_time, run.info.lifecycle_stage, run.data.tags, run.data.params,
            {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key))
             for key in run.data.metrics},
        )
        for run in runs
    }


def tracked_state(root: Path) -> dict[str, tuple]:
    """:func:`run_states` of the study in ``root``."""
    return run_states(sweep_runs(root).client)
