"""The stage's files and summary from trial records, and what reaches MLflow from a Ray result."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import yaml
from tune_study import study_params

from pedtune.config import validate
from pedtune.tracking.sweep import trial_metrics
from pedtune.tune.outputs import best_params_yaml, curves_csv, summary_table, trials_csv, tune_metrics
from pedtune.tune.plots import PLOTS, asha_rungs, plot_best_so_far, write_plots
from pedtune.tune.results import COMPLETED, ERROR, STOPPED_EARLY, TrialRecord, best_trial
from pedtune.tune.space import decode_sample

PARAMS = ["train.lr", "train.batch_size"]


def _record(trial_id: str, lr: float, scores: list[float], status: str = COMPLETED, initial: bool = False,
            error: str = "") -> TrialRecord:
    history = tuple({"epoch": e, "bbox_mAP": s, "segm_mAP": s / 2, "train_loss": 1.0}
                    for e, s in enumerate(scores, start=1))
    return TrialRecord(trial_id=trial_id, overrides={"train.lr": lr, "train.batch_size": 4}, status=status,
                       is_initial=initial, metric="bbox_mAP", history=history, time_s=10.0 * len(scores),
                       error=error)


RECORDS = [
    _record("a", 0.005, [0.1, 0.3], initial=True),
    _record("b", 2.0, [], status=ERROR, error="NonFiniteLossError: non-finite loss at epoch 1"),
    _record("c", 0.02, [0.2, 0.5]),
    _record("d", 0.0001, [0.05], status=STOPPED_EARLY),
]


def _config():
    return validate(study_params(Path("/nonexistent")))


def test_the_best_trial_has_the_highest_final_metric_among_those_that_scored():
    assert best_trial(RECORDS).trial_id == "c"
    assert best_trial([RECORDS[1]]) is None
    assert math.isnan(RECORDS[1].final) and RECORDS[3].best == 0.05


def test_a_trial_asha_stopped_does_not_beat_the_trials_that_outscored_it_at_its_rung():
    # Stopped at epoch 2 because 0.29 < 0.31; the finished trial then dropped to 0.28.
    finished = _record("done", 0.005, [0.20, 0.31, 0.30, 0.28], initial=True)
    stopped = _record("stop", 0.02, [0.18, 0.29], status=STOPPED_EARLY)
    assert best_trial([finished, stopped]).trial_id == "done"
    # With no finished trial left (it failed at its last epoch), the furthest stopped ones compete.
    failed = _record("done", 0.005, [0.20, 0.31, 0.30], status=ERROR, error="NonFiniteLossError")
    further = _record("far", 0.01, [0.10, 0.15, 0.16], status=STOPPED_EARLY)
    assert best_trial([failed, stopped, further]).trial_id == "far"


def test_the_best_so_far_line_follows_the_best_trial_rule():
    records = [_record("a", 0.005, [0.3, 0.62], initial=True), _record("b", 0.02, [0.7], status=STOPPED_EARLY),
               _record("c", 0.01, [0.4, 0.58]), _record("d", 0.03, [0.5, 0.66])]
    figure = plot_best_so_far(records, _config(), best_trial(records))
    (line,) = [line for line in figure.axes[0].get_lines() if line.get_label() == "best so far"]
    assert list(line.get_ydata()) == [0.62, 0.62, 0.62, 0.66]  # the stopped trial's 0.7 was a rung score


def test_best_params_is_a_validated_drop_in_train_section():
    config = _config()
    text = best_params_yaml(config, best_trial(RECORDS))
    assert text.startswith("# Best trial c")
    section = yaml.safe_load(text)
    assert section["lr"] == 0.02 and section["batch_size"] == 4 and section["epochs"] == config.train.epochs
    raw = study_params(Path("/nonexistent"))
    raw["train"] = section
    assert validate(raw).train.lr == 0.02


def test_trials_csv_has_one_row_per_trial_with_status_and_initial_flag():
    rows = list(csv.DictReader(io.StringIO(trials_csv(RECORDS, PARAMS, "bbox_mAP"))))
    assert [r["trial_id"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["status"] for r in rows] == [COMPLETED, ERROR, COMPLETED, STOPPED_EARLY]
    assert [r["initial"] for r in rows] == ["true", "false", "false", "false"]
    assert rows[2]["final_bbox_mAP"] == "0.5" and rows[1]["final_bbox_mAP"] == ""
    assert rows[1]["train.lr"] == "2.0" and "non-finite" in rows[1]["error"]


def test_curves_csv_has_a_row_per_trial_epoch():
    rows = list(csv.DictReader(io.StringIO(curves_csv(RECORDS))))
    assert [(r["trial_id"], r["epoch"]) for r in rows] == [("a", "1"), ("a", "2"), ("c", "1"), ("c", "2"), ("d", "1")]
    assert rows[1]["bbox_mAP"] == "0.3"


def test_tune_metrics_count_the_cost_and_compare_best_with_initial():
    metrics = tune_metrics(RECORDS, best_trial(RECORDS), wall_time_s=12.34)
    assert metrics == {
        "best_bbox_mAP": 0.5, "initial_bbox_mAP": 0.3, "best_searched_bbox_mAP": 0.5, "num_trials": 4, "num_errored": 1,
        "num_stopped_early": 1, "num_retried": 0, "trial_epochs": 5, "trial_time_s": 50.0, "wall_time_s": 12.3,
    }


def test_when_the_initial_configuration_wins_tune_metrics_keep_the_best_proposal_for_the_report():
    initial_wins = [_record("a", 0.005, [0.1, 0.6], initial=True), *RECORDS[1:]]
    metrics = tune_metrics(initial_wins, best_trial(initial_wins), wall_time_s=1.0)
    assert (metrics["best_bbox_mAP"], metrics["initial_bbox_mAP"], metrics["best_searched_bbox_mAP"]) == (0.6, 0.6, 0.5)
    only_initial = tune_metrics(initial_wins[:2], best_trial(initial_wins[:2]), wall_time_s=1.0)
    assert only_initial["best_searched_bbox_mAP"] is None  # no proposal scored


def test_the_summary_marks_the_initial_and_the_best_configuration():
    lines = summary_table(RECORDS, best_trial(RECORDS), PARAMS, "bbox_mAP").splitlines()
    assert lines[0].split()[:4] == ["#", "trial_id", "status", "epochs"]
    assert lines[2].endswith("initial") and lines[4].endswith("BEST")
    assert "ERROR" in lines[3]
    # A sweep whose trials all failed points at this table for their errors.
    assert lines[3].endswith("NonFiniteLossError: non-finite loss at epoch 1")


def test_only_the_trials_own_metrics_reach_mlflow():
    ray_result = {
        "bbox_mAP": 0.4, "train_loss": 1.2, "lr": 0.01, "epoch": 2, "training_iteration": 2, "pid": 123,
        "timestamp": 1700000000, "time_this_iter_s": 3.0, "time_total_s": 6.0, "time_since_restore": 6.0,
        "done": False, "trial_id": "abc", "hostname": "vm", "node_ip": "1.2.3.4", "date": "2026-01-01",
        "config": {"train.lr": 0.01}, "checkpoint_dir_name": "checkpoint_000001", "iterations_since_restore": 2,
        "experiment_tag": "1_lr=0.01", "should_checkpoint": True,
    }
    assert trial_metrics(ray_result) == {"bbox_mAP": 0.4, "train_loss": 1.2, "lr": 0.01}


def test_asha_rungs_are_where_trials_can_be_stopped():
    asha = {"grace_period": 1, "reduction_factor": 3}
    config = validate(study_params(Path("/nonexistent"), {"train": {"epochs": 9}, "tune": {"asha": asha}}))
    assert asha_rungs(config) == [1, 3]
    fifo = validate(study_params(Path("/nonexistent"), {"tune": {"scheduler": "fifo"}}))
    assert asha_rungs(fifo) == []


def test_fractional_asha_rungs_are_drawn_at_the_epoch_ray_judges_them():
    # Ray compares a trial at its first epoch at or past a milestone: 2, 5, 12.5 -> 2, 5, 13.
    asha = {"grace_period": 2, "reduction_factor": 2.5}
    config = validate(study_params(Path("/nonexistent"), {"train": {"epochs": 20}, "tune": {"asha": asha}}))
    assert asha_rungs(config) == [2, 5, 13]
    slow = {"grace_period": 1, "reduction_factor": 1.5}  # 1, 1.5, 2.25, 3.4, 5.1, 7.6
    config = validate(study_params(Path("/nonexistent"), {"train": {"epochs": 10}, "tune": {"asha": slow}}))
    assert asha_rungs(config) == [1, 2, 3, 4, 6, 8]


def test_a_choice_of_ints_on_a_float_field_is_plotted(tmp_path):
    # The trial trains the field's type (10.0), the choice lists 10: both must meet on one tick.
    space = [{"param": "train.grad_clip_norm", "type": "choice", "values": [0, 10]}]
    config = validate(study_params(Path("/nonexistent"), {"tune": {"search_space": space}}))
    overrides = [decode_sample({"train.grad_clip_norm": value}, config.tune.search_space) for value in (10, 0)]
    assert overrides == [{"train.grad_clip_norm": 10.0}, {"train.grad_clip_norm": 0.0}]
    records = [TrialRecord(trial_id=f"t{i}", overrides=o, status=COMPLETED, is_initial=i == 0, metric="bbox_mAP",
                           history=({"epoch": 1, "bbox_mAP": 0.1 * (i + 1)},), time_s=1.0, error="")
               for i, o in enumerate(overrides)]
    write_plots(records, config, tmp_path, best_trial(records))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOTS)
