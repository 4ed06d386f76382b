"""The sweep's console progress: trial k of N, the best so far by the sweep's rule, an ETA."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial

from pedtune import console
from pedtune.config import StudyConfig, validate
from pedtune.tune.progress import SweepProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_trial(trial_id: str, lr: float, epochs: int, score: float | None, status: str = Trial.RUNNING,
               error_file: str | None = None) -> SimpleNamespace:
    result = {"training_iteration": epochs, "bbox_mAP": score} if epochs else {}
    return SimpleNamespace(trial_id=trial_id, config={"train.lr": lr}, last_result=result, status=status,
                           error_file=error_file)


@pytest.fixture
def sweep_config(raw_params: dict) -> StudyConfig:
    raw_params["tune"].update(num_samples=4, search_space=[
        {"param": "train.lr", "type": "qloguniform", "lower": 0.0001, "upper": 0.1, "q": 0.0001}])
    raw_params["train"].update(epochs=3)
    raw_params["tune"]["asha"].update(grace_period=1, reduction_factor=3)
    return validate(raw_params)


def test_each_ended_trial_gets_its_line_the_best_so_far_and_an_eta(sweep_config, capsys):
    console.configure("tune")
    clock = Clock()
    progress = SweepProgress(sweep_config, clock=clock)
    # successive halving of 4 trials over 3 epochs, rungs at 1 and 3 (factor 3): 4*1 + 4/3*2
    assert progress.budget == pytest.approx(4 + 8 / 3)
    a = fake_trial("a_00000", 0.005, 0, None)
    b = fake_trial("b_00001", 0.02, 0, None)
    for epoch, score in ((1, 0.30), (2, 0.40), (3, 0.50)):
        clock.now += 60
        a.last_result = {"training_iteration": epoch, "bbox_mAP": score}
        progress.on_trial_result(0, [a], a, a.last_result)
    a.status = Trial.TERMINATED
    progress.on_trial_complete(0, [a, b], a)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "pedtune tune: trial 1 of 4 (a_00000) finished all 3 epochs: val bbox_mAP 0.5000"
    assert lines[1] == "pedtune tune: best so far: val bbox_mAP 0.5000 (trial a_00000: train.lr=0.005)"
    # 3 of ~6.7 trial-epochs done, 60 s each: 3.7 left, at least 1 for each of the 3 trials to come
    assert lines[2].startswith("pedtune tune: ETA 3 min 40 s: about 4 trial-epochs left of 7 (4 trials, ASHA")
    assert "1 min 00 s per trial-epoch so far" in lines[2]

    clock.now += 60
    b.last_result = {"training_iteration": 1, "bbox_mAP": 0.9}
    progress.on_trial_result(0, [a, b], b, b.last_result)
    b.status = Trial.TERMINATED
    progress.on_trial_complete(0, [a, b], b)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("pedtune tune: trial 2 of 4 (b_00001) stopped by the scheduler after 1 of 3 epochs: "
                        "val bbox_mAP 0.9000")
    # A trial stopped at a rung does not compete with one that ran every epoch.
    assert lines[1] == "pedtune tune: best so far: val bbox_mAP 0.5000 (trial a_00000: train.lr=0.005)"


def test_before_any_full_trial_the_furthest_trials_stand_in(sweep_config, capsys):
    console.configure("tune")
    progress = SweepProgress(sweep_config, clock=Clock())
    stopped = fake_trial("s_00000", 0.001, 1, 0.2, Trial.TERMINATED)
    running = fake_trial("r_00001", 0.003, 2, 0.1)
    progress.on_trial_complete(0, [stopped, running], stopped)
    err = capsys.readouterr().err
    assert ("best so far: val bbox_mAP 0.1000 at epoch 2; no trial has run all 3 epochs yet "
            "(trial r_00001: train.lr=0.003)") in err
    assert "ETA unknown yet" in err  # no epoch reported in this run of the stage yet


def test_a_failed_trial_is_a_warning_naming_its_error(sweep_config, tmp_path: Path, capsys):
    console.configure("tune")
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback ...\n  ...\npedtune.errors.NonFiniteLossError: non-finite loss at epoch 1\n")
    progress = SweepProgress(sweep_config, clock=Clock())
    trial = fake_trial("e_00000", 0.1, 1, None, Trial.ERROR, str(error_file))
    progress.on_trial_error(0, [trial], trial)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("pedtune tune: warning: trial 1 of 4 (e_00000) failed after 1 epoch: "
                        "pedtune.errors.NonFiniteLossError: non-finite loss at epoch 1")
    assert lines[1] == "pedtune tune: best so far: none scored yet"


def test_quiet_hides_the_trial_lines_and_the_callback_survives_pickling(sweep_config, capsys):
    # Tune saves the callbacks with the sweep; a resumed sweep runs the unpickled copy.
    progress = pickle.loads(pickle.dumps(SweepProgress(sweep_config)))
    console.configure("tune", quiet=True)
    trial = fake_trial("a_00000", 0.005, 3, 0.5, Trial.TERMINATED)
    progress.on_trial_complete(0, [trial], trial)
    assert capsys.readouterr().err == ""
    console.configure(None)
