"""Hyperparameter importance on constructed trials: the parameter that alone sets the score ranks first."""

from __future__ import annotations

import csv
import io
import math
import random

from pedtune.config.schema import Distribution
from pedtune.tune.importance import (
    MIN_TRIALS,
    importance_csv,
    importance_metrics,
    importance_summary,
    param_importance,
    plot_importance,
)
from pedtune.tune.results import COMPLETED, ERROR, STOPPED_EARLY, TrialRecord

SPACE = [
    Distribution(param="train.lr", type="qloguniform", lower=0.0001, upper=0.1, q=0.0001),
    Distribution(param="train.batch_size", type="choice", values=[2, 4, 8]),
    Distribution(param="train.weight_decay", type="loguniform", lower=0.00001, upper=0.001),
]


def _trials(count: int, score, epochs=lambda i: 3, seed: int = 0) -> list[TrialRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        overrides = {"train.lr": max(0.0001, round(10 ** rng.uniform(-4, -1), 4)),
                     "train.batch_size": rng.choice([2, 4, 8]),
                     "train.weight_decay": 10 ** rng.uniform(-5, -3)}
        n = epochs(i)
        history = tuple({"epoch": e, "bbox_mAP": score(overrides, e)} for e in range(1, n + 1))
        records.append(TrialRecord(str(i), overrides, COMPLETED if n == 3 else STOPPED_EARLY, i == 0, "bbox_mAP",
                                   history, 1.0))
    return records


def _batch_only(overrides, epoch):
    return {2: 0.1, 4: 0.3, 8: 0.6}[overrides["train.batch_size"]] * epoch / 3


def test_the_parameter_that_alone_sets_the_score_ranks_first_for_every_evaluator():
    importance = param_importance(_trials(24, _batch_only), SPACE, "bbox_mAP")
    assert importance.available and importance.trials_used == 24 and importance.epoch == 3
    for name, scores in importance.scores.items():
        assert max(scores, key=scores.get) == "train.batch_size", (name, scores)
        assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-6)
    assert importance.scores["fanova"]["train.batch_size"] > 0.8
    rows = list(csv.DictReader(io.StringIO(importance_csv(importance))))
    assert [r["param"] for r in rows] == [d.param for d in SPACE] and rows[0]["scored_at_epoch"] == "3"
    assert importance_metrics(importance)["importance"]["fanova"]["train.batch_size"] > 0.8
    assert "train.batch_size" in importance_summary(importance).split(":", 1)[1].split(",")[0]
    plot_importance(importance)  # draws without a display


def test_under_asha_every_trial_is_scored_at_the_deepest_epoch_all_reached():
    # Stopped trials ran 1 epoch; one failed trial is left out whatever it reached.
    records = _trials(20, _batch_only, epochs=lambda i: 3 if i % 3 == 0 else 1)
    records.append(TrialRecord("x", records[0].overrides, ERROR, False, "bbox_mAP", (), 0.0, "boom"))
    importance = param_importance(records, SPACE, "bbox_mAP")
    assert importance.epoch == 1 and importance.trials_used == 20
    assert max(importance.scores["fanova"], key=importance.scores["fanova"].get) == "train.batch_size"


def test_too_few_trials_give_a_sentence_and_no_numbers():
    importance = param_importance(_trials(MIN_TRIALS - 1, _batch_only), SPACE, "bbox_mAP")
    assert not importance.available and importance.scores == {}
    assert importance_summary(importance).startswith("hyperparameter importance: too few trials")
    assert importance_metrics(importance)["importance"] is None
    text = importance_csv(importance)
    assert text.splitlines()[1].startswith("# too few trials") and len(text.splitlines()) == 2
    assert not any(ch.isdigit() for ch in text.splitlines()[1].split("needed")[1].split("(")[0])


def test_scores_that_do_not_vary_explain_nothing():
    importance = param_importance(_trials(12, lambda o, e: 0.0), SPACE, "bbox_mAP")
    assert not importance.available and "same val bbox_mAP" in importance.reason
