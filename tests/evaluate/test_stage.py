"""The evaluate stage end to end on a tiny synthetic dataset (2 seeds x 1 epoch per config)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from pedtune import paths
from pedtune.config import StudyConfig, validate
from pedtune.config.schema import DataConfig, SyntheticConfig
from pedtune.data.fetch import fetch_dataset
from pedtune.data.split import read_split
from pedtune.engine.coco_eval import METRIC_NAMES
from pedtune.engine.train import EpochResult
from pedtune.errors import NonFiniteLossError
from pedtune.evaluate import files, parallel, runs
from pedtune.evaluate.stats import IMPROVEMENT, NO_DIFFERENCE, WORSE
from pedtune.model.checkpoint import read_checkpoint
from pedtune.model.weights import save_weights
from pedtune.stages import evaluate as stage
from pedtune.stages.evaluate import run_evaluate
from pedtune.stages.split import run_split

REPO_ROOT = Path(__file__).resolve().parents[2]
TUNED = {"lr": 0.01, "batch_size": 4, "weight_decay": 0.0001}


# One Ray for the module's runs, on the one worker that runs them all (--dist loadgroup).
pytestmark = [pytest.mark.xdist_group("evaluate-stage"), pytest.mark.usefixtures("module_ray")]


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudyConfig:
    """A study folder as the earlier stages leave it, with the cwd inside it."""
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["model"].update(
        arch="maskrcnn_mobilenet_v3_large_fpn", weights="none", min_size=64, max_size=96, detections_per_img=10,
        box_batch_size_per_image=64
    )
    raw["train"].update(epochs=1, warmup_epochs=0.5, device="cpu")
    raw["data"].update(source="synthetic", num_workers=0)
    raw["mlflow"].update(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    raw["evaluate"].update(seeds=[1, 2], num_pictures=2)
    raw["tune"]["resources_per_trial"].update(cpu=1)
    raw["tune"]["asha"].update(grace_period=1)  # a trial may not be shorter than ASHA's grace period
    config = validate(raw)
    fetch_dataset(DataConfig(source="synthetic", synthetic=SyntheticConfig(num_images=12, height=64, width=80,
                                                                          max_instances=2)),
                  paths.DATA_ROOT, index_file=paths.DATA_INDEX)
    run_split(config)
    save_weights(config.model, paths.PRETRAINED)
    # What the tune stage leaves: the whole tuned train section, and a cost record that
    # lacks wall_time_s (the report must say n/a rather than fail).
    best = {**config.train.model_dump(), **TUNED}
    (paths.TUNE_DIR).mkdir(parents=True)
    (paths.TUNE_DIR / "best_params.yaml").write_text(yaml.safe_dump(best), encoding="utf-8")
    paths.TUNE_METRICS.parent.mkdir(parents=True)
    paths.TUNE_METRICS.write_text(json.dumps({"trial_epochs": 5, "num_trials": 3}), encoding="utf-8")
    return config


def _assert_png(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_stage_compares_both_configs_without_training_on_the_test_split(study: StudyConfig, monkeypatch):
    seen: list[tuple[float, int, tuple[str, ...], tuple[str, ...]]] = []
    real_fit = runs.fit

    def recording_fit(config, train_samples, eval_samples, *args, **kwargs):
        seen.append((config.train.lr, config.train.seed, tuple(train_samples.stems), tuple(eval_samples.stems)))
        return real_fit(config, train_samples, eval_samples, *args, **kwargs)

    monkeypatch.setattr(runs, "fit", recording_fit)
    # One run at a time, so every training happens in this process and is recorded.
    monkeypatch.setattr(parallel, "local_capacity", lambda resources: 1)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-evaluate")  # as `dvc exp run` sets it

    metrics = run_evaluate(study)

    split, _ = read_split(paths.SPLIT_FILE)
    assert sorted((lr, seed) for lr, seed, _, _ in seen) == [(0.005, 1), (0.005, 2), (0.01, 1), (0.01, 2)]
    for _, _, trained_on, scored_each_epoch in seen:
        assert trained_on == split.train and scored_each_epoch == split.val
        assert not set(trained_on) & set(split.test) and not set(scored_each_epoch) & set(split.test)

    # metrics/evaluate.json: every key, for DVC
    assert json.loads(paths.EVALUATE_METRICS.read_text(encoding="utf-8")) == metrics
    summary = json.loads(Path("results/evaluate/summary.json").read_text(encoding="utf-8"))
    for name in ("initial", "tuned"):
        assert set(metrics[name]) == {"bbox_mAP", "segm_mAP"} and set(summary[name]) == set(METRIC_NAMES)
        for value in summary[name].values():
            assert set(value) == {"mean", "std"} and 0.0 <= value["mean"] <= 1.0 and value["std"] >= 0.0
    assert set(metrics["delta"]) == {"bbox_mAP", "segm_mAP"}
    for delta in metrics["delta"].values():
        assert delta["ci_low"] <= delta["mean"] <= delta["ci_high"]
        assert set(delta) == {"mean", "ci_low", "ci_high"}
    assert summary["verdict"] == summary["delta_verdicts"]["bbox_mAP"] and summary["verdict_metric"] == "bbox_mAP"
    assert summary["verdict"] in (IMPROVEMENT, WORSE, NO_DIFFERENCE) and summary["tuned_is_initial"] is False
    assert summary["seeds"] == [1, 2] and summary["epochs"] == {"initial": 1, "tuned": 1}

    # models/tuned.pt: the tuned configuration's model from the first seed, named in the summary
    kept = read_checkpoint(paths.TUNED_MODEL)
    assert kept.kept == summary["kept_model"] and (kept.kept["config"], kept.kept["seed"]) == ("tuned", 1)
    assert (kept.train_config.lr, kept.train_config.seed) == (TUNED["lr"], 1)
    assert kept.categories == {1: "person"} and kept.category_ids == {1: 1}
    assert len(kept.model()([torch.rand(3, 64, 80)])[0]["scores"]) <= study.model.detections_per_img
    assert (summary["confidence"], summary["train_on"]) == (0.95, "train") and metrics["wall_time_s"] > 0

    # the report
    report = files.REPORT.read_text(encoding="utf-8")
    expected = [
        "| bbox mAP |",
        "| segm AP75 |",
        "Verdict on bbox mAP",
        "Student t-interval",
        "| lr (searched) | 0.005 | 0.01 |",
        "| batch_size (searched) | 2 | 4 |",
        "| search: epochs trained by all trials | 5 |",
        "| search: trials | 3 |",
        "| search: wall time | n/a |",
        f"| torch | {torch.__version__} |",
        "| device | cpu |",
    ]
    for text in expected:
        assert text in report, text

    # per-seed CSV (dvc plots), per-seed plot and the pictures
    with files.PER_SEED_CSV.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    pairs = [("initial", "1"), ("initial", "2"), ("tuned", "1"), ("tuned", "2")]
    assert [(row["config"], row["seed"]) for row in rows] == pairs
    assert all(row[metric] for row in rows for metric in METRIC_NAMES)
    _assert_png(files.PER_SEED_PLOT)
    pictures = sorted(files.PICTURES.glob("*.png"))
    assert [p.stem for p in pictures] == sorted(split.test)[:2]
    for picture in pictures:
        width, height = _assert_png(picture)
        assert width > 2 * height  # three panels side by side

    # MLflow: a parent with one child per (config, seed), all finished
    client = MlflowClient(study.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(study.mlflow.experiment)
    all_runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["stage"] == "evaluate"
    parent = parents[0]
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted((r.data.tags["config"], r.data.tags["seed"]) for r in children) == pairs
    assert {r.info.status for r in all_runs} == {"FINISHED"}
    provenance = {key: parent.data.tags[key] for key in ("git_commit", "dvc_experiment", "dataset_hash")}
    assert provenance["dvc_experiment"] == "exp-evaluate"
    for child in children:
        assert {key: child.data.tags.get(key) for key in provenance} == provenance
        assert child.data.params["train.seed"] == child.data.tags["seed"]
        assert child.data.params["train.lr"] == ("0.01" if child.data.tags["config"] == "tuned" else "0.005")
        assert set(METRIC_NAMES) | {f"test_{m}" for m in METRIC_NAMES} <= set(child.data.metrics)
        assert [m.step for m in client.get_metric_history(child.info.run_id, "bbox_mAP")] == [1]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "per_seed.png", "pictures", "evaluate.json", "per_seed.csv"} <= artifacts
    assert f"| MLflow run | {parent.info.run_id} " in report

    # The kept model, registered: the first version of the name is the champion
    version = client.get_model_version_by_alias(study.mlflow.registered_model, "champion")
    assert str(version.version) == "1" and version.run_id == parent.info.run_id
    assert version.tags["dataset_hash"] == provenance["dataset_hash"] and version.tags["config"] == "tuned"
    assert float(version.tags["test_bbox_mAP"]) == pytest.approx(summary["tuned"]["bbox_mAP"]["mean"], abs=1e-6)
    assert {"registry_time_s", "model_size_bytes"} <= set(client.get_run(parent.info.run_id).data.metrics)
    assert f"| dataset hash | {provenance['dataset_hash']} (of {paths.DATA_ROOT}) |" in report


def test_stage_trains_each_seed_once_when_the_search_kept_the_initial_config(study: StudyConfig, monkeypatch):
    (paths.TUNE_DIR / "best_params.yaml").write_text(yaml.safe_dump(study.train.model_dump()), encoding="utf-8")
    seeds_trained: list[int] = []
    real_fit = runs.fit

    def recording_fit(config, *args, **kwargs):
        seeds_trained.append(config.train.seed)
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(runs, "fit", recording_fit)
    monkeypatch.setattr(parallel, "local_capacity", lambda resources: 1)
    written = []
    real_write_outputs = stage.write_outputs
    monkeypatch.setattr(stage, "write_outputs", lambda *args: written.append(args) or real_write_outputs(*args))

    metrics = run_evaluate(study)

    assert sorted(seeds_trained) == [1, 2] and metrics["runs_trained"] == 2
    # Nothing was compared: no difference, no verdict (a Δ of 0 by construction is no measurement).
    for delta in metrics["delta"].values():
        assert delta == {"mean": None, "ci_low": None, "ci_high": None}
    assert metrics["initial"] == metrics["tuned"]
    summary = json.loads(files.SUMMARY.read_text(encoding="utf-8"))
    assert summary["tuned_is_initial"] is True and summary["verdict"] is None
    report = files.REPORT.read_text(encoding="utf-8")
    assert "**The sweep's best configuration is the initial one; there is no tuned model to compare.**" in report
    assert "Verdict" not in report and "Δ" not in report
    assert "| evaluation: training runs | 2 (1 config (tuned = initial)" in report
    kept = read_checkpoint(paths.TUNED_MODEL).kept
    assert kept == summary["kept_model"] and (kept["config"], kept["seed"]) == ("initial", 1)
    assert "the sweep kept the initial configuration" in kept["note"]
    with files.PER_SEED_CSV.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["config"], row["seed"]) for row in rows] == [("initial", "1"), ("initial", "2"), ("tuned", "1"), ("tuned", "2")]
    assert len(list(files.PICTURES.glob("*.png"))) == 2

    client = MlflowClient(study.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(study.mlflow.experiment)
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    same_as = {(r.data.tags["config"], r.data.tags["seed"]): r.data.tags.get("same_run_as") for r in children}
    assert same_as == {("initial", "1"): None, ("initial", "2"): None, ("tuned", "1"): "initial-seed1", ("tuned", "2"): "initial-seed2"}

    # Writing the outputs again, failing part-way (the pictures): the first outputs stay whole.
    def files_under(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    before = files_under(paths.EVALUATE_DIR.parent)
    monkeypatch.setattr(stage, "report_markdown", lambda study: "a report that must not land\n")

    def failing_pictures(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(stage, "write_comparison_pictures", failing_pictures)
    with pytest.raises(RuntimeError, match="drawing failed"):
        real_write_outputs(*written[0])
    assert files_under(paths.EVALUATE_DIR.parent) == before


def test_a_run_that_diverges_is_reported_and_the_other_runs_still_count(study: StudyConfig, monkeypatch):
    real_fit = runs.fit

    def fit_diverging_for_tuned_seed_2(config, *args, **kwargs):
        if (config.train.lr, config.train.seed) == (TUNED["lr"], 2):
            kwargs["on_epoch_end"](EpochResult(1, {"bbox_mAP": 0.01, "train_loss": 2.5}), dict)
            raise NonFiniteLossError(epoch=2, step=2, losses={"loss_mask": float("nan")})
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(runs, "fit", fit_diverging_for_tuned_seed_2)
    monkeypatch.setattr(parallel, "local_capacity", lambda resources: 1)

    metrics = run_evaluate(study)

    # Two seeds, one of them lost by the tuned config: one pair, so no interval and no verdict.
    assert (metrics["runs_trained"], metrics["runs_diverged"]) == (4, 1)
    assert json.loads(files.SUMMARY.read_text(encoding="utf-8"))["verdict"] == "undetermined"
    assert metrics["initial"]["bbox_mAP"]["std"] is not None and metrics["tuned"]["bbox_mAP"]["std"] is None
    assert metrics["tuned"]["bbox_mAP"]["mean"] is not None  # its one finished run's score
    report = files.REPORT.read_text(encoding="utf-8")
    assert "**Runs without a test score**: tuned seed 2 (diverged: non-finite loss at epoch 2, step 2" in report
    with files.PER_SEED_CSV.open(encoding="utf-8") as handle:
        assert [(row["config"], row["seed"]) for row in csv.DictReader(handle)] == [
            ("initial", "1"), ("initial", "2"), ("tuned", "1")]
    client = MlflowClient(study.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(study.mlflow.experiment)
    status = {(r.data.tags.get("config"), r.data.tags.get("seed")): (r.info.status, "diverged" in r.data.tags)
              for r in client.search_runs([experiment.experiment_id])}
    assert status == {(None, None): ("FINISHED", False), ("initial", "1"): ("FINISHED", False),
                      ("initial", "2"): ("FINISHED", False), ("tuned", "1"): ("FINISHED", False),
                      ("tuned", "2"): ("FAILED", True)}
    (diverged,) = [r for r in client.search_runs([experiment.experiment_id]) if "diverged" in r.data.tags]
    assert [(m.step, m.value) for m in client.get_metric_history(diverged.info.run_id, "bbox_mAP")] == [(1, 0.01)]


def test_a_run_out_of_memory_is_trained_again_alone_then_reported_and_the_other_runs_still_count(
    study: StudyConfig, monkeypatch
):
    real_fit = runs.fit
    calls: list[tuple[float, int]] = []

    def fit_out_of_memory_for_tuned_seed_2(config, *args, **kwargs):
        calls.append((config.train.lr, config.train.seed))
        if (config.train.lr, config.train.seed) == (TUNED["lr"], 2):
            kwargs["on_epoch_end"](EpochResult(1, {"bbox_mAP": 0.01, "train_loss": 2.5}), dict)
            torch.empty(2**62, dtype=torch.uint8)  # torch's CPU allocator fails: a RuntimeError
        return real_fit(config, *args, **kwargs)

    monkeypatch.setattr(runs, "fit", fit_out_of_memory_for_tuned_seed_2)
    monkeypatch.setattr(parallel, "local_capacity", lambda resources: 1)

    metrics = run_evaluate(study)

    # Its second try came after every other run, and failed again; the others all count.
    assert calls[-2:] == [(TUNED["lr"], 2), (TUNED["lr"], 2)] and len(calls) == 5
    assert (metrics["runs_trained"], metrics["runs_diverged"], metrics["runs_out_of_memory"]) == (4, 0, 1)
    assert metrics["initial"]["bbox_mAP"]["std"] is not None and metrics["tuned"]["bbox_mAP"]["mean"] is not None
    report = files.REPORT.read_text(encoding="utf-8")
    assert "tuned seed 2 (out of memory: [enforce fail at alloc_cpu.cpp" in report
    assert "DefaultCPUAllocator: can't allocate memory" in report and "trained once more, alone" in report
    client = MlflowClient(study.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(study.mlflow.experiment)
    failed = {(r.data.tags.get("config"), r.data.tags.get("seed")): r.data.tags.get("out_of_memory", "")
              for r in client.search_runs([experiment.experiment_id]) if r.info.status == "FAILED"}
    assert list(failed) == [("tuned", "2")] and "can't allocate memory" in failed["tuned", "2"]
