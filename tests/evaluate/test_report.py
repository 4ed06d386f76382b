"""The report's numbers from hand-made run results (the stage test's untrained models all score 0)."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest
import yaml

from pedtune.config import validate, with_train_overrides
from pedtune.engine.coco_eval import METRIC_NAMES
from pedtune.evaluate.report import Study, compare, metrics_json, per_seed_csv, report_markdown
from pedtune.evaluate.runs import INITIAL, TUNED, RunResult

REPO_ROOT = Path(__file__).resolve().parents[2]
# Per seed: initial bbox_mAP, tuned bbox_mAP (other metrics follow from them).
SCORES = {0: (0.50, 0.58), 1: (0.40, 0.49), 2: (0.45, 0.52)}


def _result(name: str, seed: int, bbox: float) -> RunResult:
    test = {metric: bbox for metric in METRIC_NAMES} | {"segm_mAP": bbox / 2}
    return RunResult(name, seed, [{"bbox_mAP": bbox}], test, wall_time_s=90.0, device="cpu", state_dict=None)


@pytest.fixture
def results() -> list[RunResult]:
    runs = [_result(INITIAL, seed, initial) for seed, (initial, _) in SCORES.items()]
    runs += [_result(TUNED, seed, tuned) for seed, (_, tuned) in SCORES.items()]
    random.Random(0).shuffle(runs)  # results arrive in completion order
    return runs


@pytest.fixture
def study(results: list[RunResult]) -> Study:
    config = validate(yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8")))
    tuned = with_train_overrides(config, {"train.lr": 0.02, "train.optimizer": "adamw"})
    return Study(
        configs={INITIAL: config, TUNED: tuned},
        comparison=compare(results, [0, 1, 2]),
        results=results,
        search_cost={"num_trials": 20.0, "trial_epochs": 87.0, "wall_time_s": None},
        images={"train": 119, "val": 26, "test": 25},
        execution="one run at a time",
        machine={"device": "cpu"},
        wall_time_s=4000.0,
    )


def test_differences_are_paired_by_seed_whatever_the_arrival_order(study: Study):
    difference = study.comparison.differences["bbox_mAP"]
    assert difference.mean == pytest.approx((0.08 + 0.09 + 0.07) / 3)
    assert difference.ci_low > 0  # consistent gains: an unpaired view would not show this
    assert study.comparison.spreads[INITIAL]["bbox_mAP"].std == pytest.approx(0.05)


def test_metrics_json(study: Study):
    metrics = metrics_json(study)
    assert metrics[INITIAL]["bbox_mAP"] == {"mean": 0.45, "std": 0.05}
    assert metrics["delta"]["bbox_mAP"]["verdict"] == metrics["verdict"] == "improvement"
    assert metrics["delta"]["segm_mAP"]["mean"] == pytest.approx(0.04)
    assert (metrics["seeds"], metrics["epochs"]) == ([0, 1, 2], {INITIAL: 10, TUNED: 10})


def test_report_table_and_cost(study: Study):
    report = report_markdown(study)
    assert "| bbox mAP | 0.450 ± 0.050 | 0.530 ± 0.046 | +0.080 | [+0.055, +0.105] |" in report
    assert "**Verdict on bbox mAP (the metric the search optimised): improvement**" in report
    assert "| lr (searched) | 0.005 | 0.02 |" in report and "| optimizer | sgd | adamw |" in report
    assert "| momentum |" not in report  # unchanged and not searched
    assert "| search: epochs trained by all trials | 87 |" in report and "| search: wall time | n/a |" in report
    assert "| evaluation: training runs | 6 (2 configs × 3 seeds), 60 epochs |" in report
    assert "| evaluation: wall time | 66.7 min |" in report
    assert "on the train split (119 images) for 10 epochs" in report


def test_per_seed_csv_is_sorted_by_config_then_seed(results: list[RunResult]):
    rows = list(csv.DictReader(io.StringIO(per_seed_csv(results))))
    first_two = [(r["config"], r["seed"], r["run"]) for r in rows[:2]]
    assert first_two == [(INITIAL, "0", "initial seed 0"), (INITIAL, "1", "initial seed 1")]
    assert [float(r["bbox_mAP"]) for r in rows] == [0.5, 0.4, 0.45, 0.58, 0.49, 0.52]
