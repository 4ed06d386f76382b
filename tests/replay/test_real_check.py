"""The real-vs-table check on hand-made tables: trials scored as the table predicts pass, a shuffled table fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from table_fakes import small_config, write_table

from pedtune.replay.real import RealSweep, RealTrial, check_real, prediction_interval
from pedtune.replay.table import load_table
from pedtune.replay.variant import Variant

WORTH = [0.001, 0.002, 0.004, 0.008, 0.015, 0.025, 0.035, 0.04]  # after the last of 3 epochs
SEED_SD = 0.004


def _score(worth: list[float], noise: np.ndarray):
    return lambda n, s, e: worth[n] * e / 3 + SEED_SD * float(noise[n, s, e - 1])


def _real_sweeps(seed: int) -> list[RealSweep]:
    """Two sweeps of 6 trials as the true problem would score them: fresh seeds, trials stopped at various epochs."""
    rng = np.random.default_rng(seed)
    sweeps = []
    for number in range(2):
        trials = []
        for configuration, epochs in zip(rng.permutation(8)[:6], [3, 3, 1, 1, 2, 3]):
            score = WORTH[configuration] * epochs / 3 + SEED_SD * rng.standard_normal()
            trials.append(RealTrial(int(configuration), epochs, score))
        sweeps.append(RealSweep(f"sweep{number}", Variant("random", "asha", 6), number, trials[0].configuration,
                                trials[0].score, sum(t.epochs for t in trials), tuple(trials)))
    return sweeps


def _table(folder: Path, worth: list[float]):
    noise = np.random.default_rng(5).standard_normal((8, 3, 3))
    write_table(folder, small_config({"record": {"seeds": [0, 1, 2]}}), _score(worth, noise))
    return load_table(folder)[0]


def test_the_prediction_interval_uses_the_pooled_seed_sd_and_the_configurations_seed_count(tmp_path: Path):
    table = _table(tmp_path, WORTH)
    mean, low, high = prediction_interval(table, "bbox_mAP", 5, 3)
    runs = np.asarray([[table.run(c, s).score("bbox_mAP", 3) for s in table.seeds] for c in range(8)])
    pooled = np.sqrt(runs.var(axis=1, ddof=1).mean())  # equal seed counts: the plain mean of the variances
    assert mean == pytest.approx(runs[5].mean())
    assert high - mean == pytest.approx(stats.t.ppf(0.975, 8 * 2) * pooled * np.sqrt(1 + 1 / 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_recorded_table_passes_and_a_shuffled_one_fails(tmp_path: Path, seed: int):
    sweeps = _real_sweeps(seed)
    recorded = check_real(sweeps, _table(tmp_path / "recorded", WORTH), "bbox_mAP")
    assert recorded.passed, (recorded.inside_share, recorded.rank_correlation)
    assert len(recorded.trials) == 12 and recorded.inside_share >= 10 / 12
    shuffled_worth = [WORTH[i] for i in np.random.default_rng(seed).permutation(8)]
    if shuffled_worth == WORTH:
        pytest.skip("the permutation left the table as it was")
    shuffled = check_real(sweeps, _table(tmp_path / "shuffled", shuffled_worth), "bbox_mAP")
    assert not shuffled.passed, (shuffled.inside_share, shuffled.rank_correlation)


def test_a_trial_without_a_score_is_counted_not_checked(tmp_path: Path):
    sweeps = _real_sweeps(0)
    first = sweeps[0]
    failed = RealSweep(first.name, first.variant, first.seed, first.picked, first.picked_score, first.trial_epochs,
                       (*first.trials, RealTrial(3, 1, float("nan"))))
    check = check_real([failed, sweeps[1]], _table(tmp_path, WORTH), "bbox_mAP")
    assert (len(check.trials), check.failed_trials) == (12, 1)


def test_a_trial_that_repeats_a_checked_run_counts_once(tmp_path: Path):
    # Trials train with the train section's seed: the same configuration to the same epoch is the same run.
    sweeps = _real_sweeps(0)
    first = sweeps[0]
    repeat = first.trials[0]
    again = RealSweep("again", first.variant, 1, repeat.configuration, repeat.score, repeat.epochs,
                      (repeat, RealTrial(repeat.configuration, repeat.epochs, repeat.score + 0.001)))
    table = _table(tmp_path, WORTH)
    check = check_real([*sweeps, again], table, "bbox_mAP")
    alone = check_real(sweeps, table, "bbox_mAP")
    # The exact repeat adds nothing; a run of that configuration with another score is another observation.
    assert (len(check.trials), check.repeated_trials) == (len(alone.trials) + 1, 1)
    assert alone.repeated_trials == 0
