"""The ASHA budget simulation drives the project's own scheduler the way Tune does (bench/asha_budget.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import asha_budget, common  # noqa: E402


def _config(trials: int, epochs: int, grace: int, concurrent: int = 1):
    return common.study_config(None, {"train": {"epochs": epochs}, "tune": {
        "scheduler": "asha", "num_samples": trials, "max_concurrent": concurrent,
        "asha": {"max_t": None, "grace_period": grace, "reduction_factor": 3}}})


def test_trials_worse_than_every_earlier_one_stop_at_the_grace_period() -> None:
    # One at a time, each trial below every score recorded so far: the first runs all 9 epochs, the
    # rest stop at their first rung. A scheduler that maximised the wrong way would run them all.
    outcome = asha_budget.simulate_sweep(_config(6, 9, 2), np.linspace(1.0, 0.0, 6), 0.0, np.random.default_rng(0))
    assert outcome.epochs == [9, 2, 2, 2, 2, 2] and outcome.best_finished


def test_trials_better_than_every_earlier_one_all_run_to_the_end() -> None:
    outcome = asha_budget.simulate_sweep(_config(6, 9, 1), np.linspace(0.0, 1.0, 6), 0.0, np.random.default_rng(0))
    assert outcome.epochs == [9] * 6 and outcome.best_finished


def test_concurrent_trials_start_as_slots_free_up() -> None:
    # Two at a time: the two worst trials start as slots free up, and stop at their first rung.
    outcome = asha_budget.simulate_sweep(_config(4, 3, 1, concurrent=2), np.array([0.0, 0.1, -1.0, -2.0]), 0.0,
                                         np.random.default_rng(0))
    assert outcome.epochs[2:] == [1, 1] and sum(outcome.epochs) < 4 * 3


def test_budget_without_noise_always_lets_the_best_trial_finish() -> None:
    row = asha_budget.budget(_config(12, 9, 1), sweeps=20, noise=0.0, seed=3)
    assert row["best_runs_to_the_end"] == 1.0
    f = row["fraction_of_fifo"]
    assert 0 < f["p10"] <= f["mean"] <= f["p90"] < 1
    assert row["trial_epochs_mean"] == pytest.approx(f["mean"] * 12 * 9, abs=0.1)


def test_variants_are_built_on_the_params_file(tmp_path: Path) -> None:
    params = tmp_path / "study.yaml"
    params.write_text(common.QUICK_PROFILE.read_text())
    labelled = dict(asha_budget.settings(params, ["tune.asha.grace_period=2", "train.epochs=6"]))
    own = labelled["study.yaml"]
    assert own.tune.asha.grace_period == 2 and own.train.epochs == 6 and own.tune.scheduler == "asha"
    assert labelled["study.yaml, twice the trials"].tune.num_samples == 2 * own.tune.num_samples
    assert labelled["study.yaml, grace 1"].tune.asha.grace_period == 1
    assert labelled["asha_savings --trials 9 --epochs 9"].asha_max_t == 9


def test_bad_arguments_exit_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "asha_budget.json"
    with pytest.raises(SystemExit) as exit_info:
        asha_budget.main(["--sweeps", "1", "--json", str(out)])
    assert exit_info.value.code == 2 and "--sweeps must be at least 2" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(common.QUICK_PROFILE.read_text().replace("grace_period: 1", "grace_period: 0"))
    for params, message in ((tmp_path / "none.yaml", "none.yaml not found"),
                            (bad, "tune.asha.grace_period: Input should be greater than 0")):
        with pytest.raises(SystemExit) as exit_info:
            asha_budget.main(["--params", str(params), "--json", str(out)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()
