"""Real Ray Tune sweeps replayed on hand-made tables (one Ray session for the module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import json

import numpy as np
import pytest
import yaml
from table_fakes import SMALL, small_config, write_table

from pedtune.replay.grid import Grid
from pedtune.replay.real import REAL_FOLDER, load_real_sweeps
from pedtune.replay.sweep import Sweep, replay_session, replay_trainable, run_sweep
from pedtune.replay.table import Table, load_table
from pedtune.replay.table import TableError
from pedtune.replay.verdict import judge
from pedtune.stages.compare import Variant, replay_config, run_compare, sweep_config
from pedtune.tune.outputs import TRIALS_CSV, trials_csv
from pedtune.tune.results import COMPLETED, STOPPED_EARLY, TrialRecord

# One worker holds the module's replay session (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("replay-session")]

# Four configurations: lr in 2 bins × batch size 2 or 4. Configuration 3 (the high lr, batch 4) dominates.
FOUR = {"record": {"levels": {"train.lr": 2}}, "train": {"epochs": 3}}
TRUE = [0.1, 0.2, 0.3, 0.6]


@pytest.fixture(scope="module")
def storage() -> Iterator[Path]:
    with replay_session(slots=SMALL["tune"]["max_concurrent"]) as folder:
        yield folder


def _table(folder: Path, score) -> tuple[Table, Grid, object]:
    config = small_config(FOUR)
    write_table(folder, config, score)
    table, provenance = load_table(folder)
    base = replay_config(config, provenance)
    return table, Grid.from_config(base), base


def _sweep(base, table, grid, storage, searcher, scheduler, budget, seed) -> Sweep:
    trainable = replay_trainable(table, grid, base.tune.metric)
    return run_sweep(sweep_config(base, Variant(searcher, scheduler, budget), seed), trainable, storage)


def test_every_searcher_finds_a_dominating_configuration(tmp_path: Path, storage: Path):
    table, grid, base = _table(tmp_path, lambda n, s, e: TRUE[n] * e / 3 + 0.01 * s)
    for searcher in ("hyperopt", "optuna", "random"):
        sweep = _sweep(base, table, grid, storage, searcher, "fifo", 10, seed=1)
        outcome = judge(sweep, table, "bbox_mAP")
        assert outcome.found_best and outcome.regret == 0.0, searcher
        assert len(sweep.trials) == 10 and sweep.trials[0].configuration == grid.index_of(
            {"train.lr": 0.005, "train.batch_size": 2})  # the train section comes first


def test_asha_trial_epochs_are_the_epochs_the_replay_reported(tmp_path: Path, storage: Path):
    table, grid, base = _table(tmp_path, lambda n, s, e: TRUE[n] * e / 3 + 0.01 * s)
    sweep = _sweep(base, table, grid, storage, "random", "asha", 8, seed=3)
    reported = sum(len(t.scores) for t in sweep.trials)
    assert len(sweep.events) == reported == sweep.tune_iterations
    assert reported < 8 * 3  # ASHA stopped some trials
    for trial in sweep.trials:  # each trial replayed its recorded run, epoch by epoch
        run = table.run(trial.configuration, trial.seed)
        assert trial.scores == [row["bbox_mAP"] for row in run.epochs[: len(trial.scores)]]
    assert judge(sweep, table, "bbox_mAP").trial_epochs == reported


def test_the_same_seed_replays_the_same_sweep(tmp_path: Path, storage: Path):
    table, grid, base = _table(tmp_path, lambda n, s, e: TRUE[n] * e / 3 + 0.05 * (s == n % 2))
    first, again = (_sweep(base, table, grid, storage, "hyperopt", "asha", 6, seed=7) for _ in range(2))
    assert first.trials == again.trials and first.events == again.events
    other = _sweep(base, table, grid, storage, "hyperopt", "asha", 6, seed=8)
    assert other.trials != first.trials


def test_random_search_best_so_far_matches_its_closed_form(tmp_path: Path, storage: Path):
    # No seed noise, one epoch: after k trials random search holds max(initial, k - 1 uniform draws
    # with replacement); its expectation, sum_i max(v_i, x0) P(max draw = v_i), is exact.
    table, grid, base = _table(tmp_path, lambda n, s, e: TRUE[n])
    base = base.model_copy(update={"train": base.train.model_copy(update={"epochs": 1})})
    budget, sweeps = 5, 8  # each sweep starts its trials' Ray workers anew: ~3 s a sweep
    initial = TRUE[grid.index_of({"train.lr": 0.005, "train.batch_size": 2})]
    values = np.sort(np.asarray(TRUE))
    curves = []
    for seed in range(sweeps):
        sweep = _sweep(base, table, grid, storage, "random", "fifo", budget, seed)
        picks = [t.configuration for t in sweep.trials]
        curves.append([max(TRUE[c] for c in picks[:k]) for k in range(1, budget + 1)])
    observed = np.asarray(curves)
    for k in range(1, budget + 1):
        m = k - 1
        cdf = (np.arange(1, 5) / 4) ** m
        probability = np.diff(np.concatenate([[0.0], cdf]))
        best = np.maximum(values, initial)
        expected = float(np.sum(best * probability)) if m else initial
        sd = float(np.sqrt(np.sum((best - expected) ** 2 * probability))) if m else 0.0
        assert abs(observed[:, k - 1].mean() - expected) <= 3 * sd / np.sqrt(sweeps) + 1e-9, k


def _real_sweep(folder: Path, config, tune: dict, trials: list[tuple[float, int, str, int, float]]) -> None:
    """A real sweep's folder as the docs say to keep one: its params.yaml and the trials.csv the tune stage
    wrote; ``trials``: (lr, batch size, status, epochs, final score) per trial."""
    raw = config.model_dump(mode="json")
    raw["tune"].update(tune)
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    records = [TrialRecord(trial_id=f"t{n}", overrides={"train.lr": lr, "train.batch_size": batch}, status=status,
                           is_initial=n == 1, metric="bbox_mAP", time_s=1.0,
                           history=tuple({"epoch": e, "bbox_mAP": final * e / epochs} for e in range(1, epochs + 1)))
               for n, (lr, batch, status, epochs, final) in enumerate(trials, start=1)]
    (folder / TRIALS_CSV).write_text(trials_csv(records, ["train.lr", "train.batch_size"], "bbox_mAP"))


def _restricted(grid: Grid) -> list[dict]:
    """The search space as a real sweep searches it for the check: each parameter a choice of the grid's values."""
    return [{"param": param, "type": "choice", "values": grid.values(param)} for param in grid.params]


def test_compare_writes_the_verdict_for_every_variant_and_checks_real_sweeps_against_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    config = small_config({**FOUR, "compare": {"seeds": 3, "searchers": ["hyperopt", "random"],
                                                 "schedulers": ["asha", "fifo"], "budgets": [4], "resamples": 200},
                           "record": {**FOUR["record"], "folder": "table"}})
    grid = Grid.from_config(config)
    low, high = grid.values("train.lr")
    # The train section's values, the real sweeps' first trial, must be a recorded configuration too.
    config = config.model_copy(update={"train": config.train.model_copy(update={"lr": high})})
    write_table(tmp_path / "table", config, lambda n, s, e: TRUE[n] * e / 3 + 0.01 * s)
    tune = {"searcher": "random", "scheduler": "fifo", "num_samples": 4, "search_space": _restricted(grid)}
    # Scored as the table predicts (each configuration's mean over seeds 0 and 1, at the epoch reached).
    _real_sweep(tmp_path / "table" / REAL_FOLDER / "random-fifo", config, tune,
                [(high, 2, COMPLETED, 3, 0.305), (high, 4, COMPLETED, 3, 0.605), (low, 4, STOPPED_EARLY, 1, 0.07),
                 (low, 2, COMPLETED, 3, 0.105)])
    output = run_compare(config)
    verdict = (output / "verdict.md").read_text()
    for label in ("hyperopt+asha", "random+asha", "hyperopt+fifo", "random+fifo"):
        assert f"| {label} | 4 |" in verdict
    assert "| hyperopt+fifo − random+fifo | 4 | Welch |" in verdict
    assert "| hyperopt+asha − hyperopt+fifo | 4 | paired |" in verdict
    assert "On this recorded problem (" in verdict and "4 configurations × 2 training seeds" in verdict
    assert (output / "best_so_far.png").stat().st_size > 0 and (output / "regret.png").stat().st_size > 0
    assert len((output / "sweeps.csv").read_text().splitlines()) == 1 + 4 * 3
    assert "| random-fifo | random+fifo, 4 trials | 0 | 4 | #3 | 10 |" in verdict
    assert "| random-fifo | #1 | 1 | 0.0700 | 0.0717 |" in verdict
    assert "Inside: 100% of 4 trials" in verdict and "The check passes" in verdict
    result = json.loads((output / "compare.json").read_text())
    assert result["real_sweeps"]["passed"] and result["real_sweeps"]["trials_checked"] == 4
    assert (result["resamples"], result["resample_seed"]) == (200, 0)
    # 3 against random+fifo, and hyperopt's ASHA against its FIFO (random's is among the 3)
    assert len(result["family"]) == 4


def test_a_real_sweep_of_another_problem_is_refused(tmp_path: Path):
    table, grid, base = _table(tmp_path / "table", lambda n, s, e: TRUE[n])
    other = base.model_copy(update={"model": base.model.model_copy(update={"min_size": 64})})
    _real_sweep(tmp_path / "table" / REAL_FOLDER / "other", other, {}, [(0.005, 2, COMPLETED, 3, 0.1)])
    with pytest.raises(TableError, match="other sweep settings than the replay \\(model differ"):
        load_real_sweeps(tmp_path / "table", base, grid)


def test_a_real_sweep_searching_beyond_the_grid_is_refused(tmp_path: Path):
    table, grid, base = _table(tmp_path / "table", lambda n, s, e: TRUE[n])
    _real_sweep(tmp_path / "table" / REAL_FOLDER / "continuous", base, {}, [(0.005, 2, COMPLETED, 3, 0.1)])
    with pytest.raises(TableError, match="must be a choice of the grid's values"):
        load_real_sweeps(tmp_path / "table", base, grid)
