"""One short real sweep per searcher (the real trainable and fit), shared by the assertions below."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from tune_study import SweepRuns, build_study, read_csv, study_params, sweep_runs

from pedtune import paths
from pedtune.config import StudyConfig, validate
from pedtune.stages.tune import run_tune
from pedtune.tune.outputs import CURVES_CSV

# One Ray for the three sweeps, on the one worker that builds them all (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sweeps")]

SEARCHED = ["train.lr", "train.batch_size", "train.weight_decay"]
RAY_BOOKKEEPING = {"pid", "timestamp", "done", "training_iteration", "time_total_s", "time_this_iter_s",
                   "time_since_restore", "iterations_since_restore", "epoch"}


@dataclass(frozen=True)
class Sweep:
    root: Path
    config: StudyConfig
    metrics: dict[str, Any]
    runs: SweepRuns

    def rows(self) -> list[dict[str, str]]:
        return read_csv(self.root / paths.TUNE_DIR / "trials.csv")


# Each searcher's sweep is built once.
@pytest.fixture(scope="module", params=["hyperopt", "optuna", "random"])
def sweep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, module_ray: None) -> Sweep:
    root = tmp_path_factory.mktemp(request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("DVC_EXP_NAME", f"exp-{request.param}")  # as `dvc exp run` sets it
        config = build_study(root, {"tune": {"searcher": request.param}})
        metrics = run_tune(config)
    return Sweep(root, config, metrics, sweep_runs(root))


def test_one_child_run_per_trial_under_one_parent(sweep: Sweep):
    (parent,) = sweep.runs.parents
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["searcher"] == sweep.config.tune.searcher and parent.data.tags["dataset_hash"]
    assert parent.data.params["tune.num_samples"] == "3" and parent.data.params["tune.search_space.0.param"]
    children = sweep.runs.children
    assert len(children) == len(sweep.rows()) == sweep.config.tune.num_samples == sweep.metrics["num_trials"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    provenance = {key: parent.data.tags[key] for key in ("git_commit", "dvc_experiment", "dataset_hash")}
    assert provenance["dvc_experiment"] == f"exp-{sweep.config.tune.searcher}"
    for child in children:  # a filter on the experiment's name finds the trials too
        assert {key: child.data.tags.get(key) for key in provenance} == provenance
    assert {c.data.tags["trial_id"] for c in children} == {row["trial_id"] for row in sweep.rows()}
    artifacts = {a.path for a in sweep.runs.client.list_artifacts(parent.info.run_id, "tune")}
    assert {"tune/best_params.yaml", "tune/trials.csv", "tune/learning_curves.png", "tune/tune.json",
            "tune/importance.csv", "tune/importance.png"} <= artifacts
    # Three trials are too few for importance: no numbers anywhere, the reason in the table.
    assert sweep.metrics["importance"] is None and sweep.metrics["importance_trials"] == 3
    # The counts behind the decision (importance_trials, _scored_at_epoch) are logged; no parameter's score is.
    assert not any(key.startswith(("importance_fanova.", "importance_ped_anova.")) for key in parent.data.metrics)
    assert parent.data.metrics["importance_trials"] == 3


def test_child_runs_hold_the_trial_params_and_per_epoch_val_metrics_only(sweep: Sweep):
    epochs = {row["trial_id"]: int(row["epochs"]) for row in sweep.rows()}
    for child in sweep.runs.children:
        assert sorted(child.data.params) == sorted(SEARCHED)
        assert child.info.status == "FINISHED"
        metrics = set(child.data.metrics)
        assert {"bbox_mAP", "segm_mAP", "train_loss", "lr"} <= metrics
        assert not metrics & RAY_BOOKKEEPING and not any(m.startswith(("config", "time_")) for m in metrics)
        run_epochs = epochs[child.data.tags["trial_id"]]
        assert sweep.runs.metric_steps(child, "bbox_mAP") == list(range(1, run_epochs + 1))


def test_the_initial_config_is_the_first_trial(sweep: Sweep):
    first, *others = sweep.rows()
    assert first["initial"] == "true" and all(row["initial"] == "false" for row in others)
    train = sweep.config.train
    assert (float(first["train.lr"]), int(first["train.batch_size"]), float(first["train.weight_decay"])) == (
        train.lr, train.batch_size, train.weight_decay)
    assert sweep.metrics["initial_bbox_mAP"] == pytest.approx(float(first["final_bbox_mAP"]))


def test_every_trial_trained_with_values_of_the_declared_space(sweep: Sweep):
    # Optuna proposes unrounded lr values; the trial rounds them to q = 0.0001 and logs that.
    for child in sweep.runs.children:
        logged = child.data.params["train.lr"]
        assert 1e-4 <= float(logged) <= 0.1 and Decimal(logged).as_tuple().exponent >= -4
        assert child.data.params["train.batch_size"] in ("4", "8")


def test_best_params_is_a_drop_in_train_section(sweep: Sweep):
    section = yaml.safe_load((sweep.root / paths.TUNE_DIR / "best_params.yaml").read_text())
    raw = study_params(sweep.root)
    raw["train"] = section
    tuned = validate(raw)
    best = max((r for r in sweep.rows() if r["status"] != "ERROR"), key=lambda r: float(r["final_bbox_mAP"]))
    assert tuned.train.lr == float(best["train.lr"]) and tuned.train.batch_size == int(best["train.batch_size"])
    assert sweep.metrics["best_bbox_mAP"] == pytest.approx(float(best["final_bbox_mAP"]))


def test_outputs_for_dvc(sweep: Sweep):
    assert json.loads((sweep.root / paths.TUNE_METRICS).read_text()) == sweep.metrics
    assert sweep.metrics["trial_epochs"] == sum(int(r["epochs"]) for r in sweep.rows())
    curves = read_csv(sweep.root / CURVES_CSV)
    assert len(curves) == sweep.metrics["trial_epochs"] and set(curves[0]) >= {"trial_id", "epoch", "bbox_mAP"}
    for name in ("metric_vs_params.png", "best_so_far.png", "learning_curves.png"):
        assert (sweep.root / paths.TUNE_DIR / name).read_bytes()[:4] == b"\x89PNG"
    # Finished trials need no checkpoint: they are removed to save disk.
    assert not list((sweep.root / sweep.config.tune.storage_path).glob("sweep-*/*/checkpoint_*"))
