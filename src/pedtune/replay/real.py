"""Real sweeps against the table: does a real trial score what the table predicts for its configuration?

A real sweep is the tune stage run for real on the recorded problem (the same split, model, train
section and epochs) with one searcher, scheduler and seed, its search space restricted to the
grid's values (each searched parameter a ``choice`` of its recorded levels), so every real trial
trains a recorded configuration. Its folder under the table's ``real/`` holds the params.yaml it
ran with and the ``trials.csv`` it wrote to ``results/tune``.

The check: each real trial's score at the epoch it reached against its configuration's 95 %
prediction interval from the table (the recorded seeds' mean, the seed sd pooled over all
configurations, its seed count). If the table is right, about 95 % of real trials land inside and
real scores rank as the recorded ones do. The check fails when the share inside is significantly
below 95 % (one-sided binomial test) or the rank correlation is not significantly positive
(one-sided Spearman test), both at ``ALPHA``: a shuffled or stale table fails, and a sound one
fails only by the test's own chance.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from pedtune.config import StudyConfig, load_config
from pedtune.config.schema import Distribution
from pedtune.replay.grid import Grid
from pedtune.replay.table import Table, TableError, typed_value
from pedtune.replay.variant import Variant
from pedtune.tune.outputs import TRIALS_CSV
from pedtune.tune.results import TrialRecord, best_trial

REAL_FOLDER = "real"
CONFIDENCE = 0.95  # of each prediction interval
ALPHA = 0.05  # of the check's two tests


@dataclass(frozen=True)
class RealTrial:
    configuration: int  # the recorded configuration it trained
    epochs: int  # epochs it reached
    score: float  # its val metric at that epoch; nan if it failed


@dataclass(frozen=True)
class RealSweep:
    name: str  # its folder under real/
    variant: Variant
    seed: int
    picked: int  # the grid configuration of the picked trial; -1 if no trial finished
    picked_score: float  # the picked trial's final val metric, as the real sweep measured it
    trial_epochs: int
    trials: tuple[RealTrial, ...] = ()


def _restricted(dist: Distribution, recorded: Distribution, grid: Grid) -> bool:
    """The real sweep's distribution searches the recorded one, or only the grid's values of it."""
    if dist == recorded:
        return dist.type == "choice"
    return dist.type == "choice" and all(value in grid.values(dist.param) for value in dist.values or [])


def _same_problem(path: Path, config: StudyConfig, base: StudyConfig, grid: Grid) -> None:
    """The real sweep must have searched the recorded problem with the replay's sweep settings."""
    pairs = {
        "data.split": (config.data.split, base.data.split), "model": (config.model, base.model),
        "train": (config.train, base.train),
        "tune.asha.grace_period": (config.tune.asha.grace_period, base.tune.asha.grace_period),
        "tune.asha.reduction_factor": (config.tune.asha.reduction_factor, base.tune.asha.reduction_factor),
        "tune.max_concurrent": (config.tune.max_concurrent, base.tune.max_concurrent),
        "tune.n_initial_points": (config.tune.n_initial_points, base.tune.n_initial_points),
    }
    differing = [name for name, (real, replayed) in pairs.items() if real != replayed]
    if differing:
        raise TableError(f"{path}: this real sweep ran another problem or other sweep settings than the replay "
                         f"({', '.join(differing)} differ)")
    recorded = {dist.param: dist for dist in base.tune.search_space}
    searched = {dist.param: dist for dist in config.tune.search_space}
    if set(searched) != set(recorded) or not all(_restricted(searched[p], recorded[p], grid) for p in recorded):
        raise TableError(f"{path}: every searched parameter must be a choice of the grid's values, so every real "
                         "trial trains a recorded configuration: " + "; ".join(
                             f"{param} among {grid.values(param)}" for param in grid.params))


def _records(path: Path, config: StudyConfig) -> list[TrialRecord]:
    """The trials of a real sweep's trials.csv, as far as picking the best needs them."""
    metric = config.tune.metric
    params = [dist.param for dist in config.tune.search_space]
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"trial_id", "initial", "status", "epochs", f"final_{metric}", *params} - set(rows[0] if rows else {})
    if not rows or missing:
        raise TableError(f"{path}: not a trials.csv of the tune stage (missing {sorted(missing) or 'rows'})")
    records = []
    for row in rows:
        epochs = int(row["epochs"])
        final = float(row[f"final_{metric}"]) if row[f"final_{metric}"] else math.nan
        # Only the final score matters for the pick; the earlier epochs' scores are not in trials.csv.
        history = tuple({"epoch": e, metric: final if e == epochs else math.nan} for e in range(1, epochs + 1))
        records.append(TrialRecord(trial_id=row["trial_id"], overrides={p: typed_value(row[p]) for p in params},
                                   status=row["status"], is_initial=row["initial"] == "true", metric=metric,
                                   history=history, time_s=0.0))
    return records


def _trial(record: TrialRecord, grid: Grid, path: Path) -> RealTrial:
    configuration = grid.index_of(record.overrides)
    if grid.configurations()[configuration] != record.overrides:
        raise TableError(f"{path}: trial {record.trial_id} trained {record.overrides}, not a recorded configuration")
    return RealTrial(configuration, len(record.history), record.final)


def load_real_sweeps(table_folder: Path, base: StudyConfig, grid: Grid) -> list[RealSweep]:
    """Every real sweep under ``table_folder``/real/ (none if that folder does not exist)."""
    sweeps = []
    for params_file in sorted((table_folder / REAL_FOLDER).glob("*/params.yaml")):
        config = load_config(params_file)
        _same_problem(params_file, config, base, grid)
        trials = params_file.parent / TRIALS_CSV
        if not trials.exists():
            raise TableError(f"{trials} not found: copy the real sweep's results/tune/{TRIALS_CSV} next to its params")
        records = _records(trials, config)
        best = best_trial(records)
        sweeps.append(RealSweep(
            name=params_file.parent.name,
            variant=Variant(config.tune.searcher, config.tune.scheduler, config.tune.num_samples),
            seed=config.tune.seed,
            picked=-1 if best is None else grid.index_of(best.overrides),
            picked_score=math.nan if best is None else best.final,
            trial_epochs=sum(record.epochs for record in records),
            trials=tuple(_trial(record, grid, trials) for record in records),
        ))
    return sweeps


@dataclass(frozen=True)
class TrialCheck:
    sweep: str
    trial: RealTrial
    predicted: float  # the recorded seeds' mean at the trial's epoch
    low: float
    high: float

    @property
    def inside(self) -> bool:
        return self.low <= self.trial.score <= self.high


@dataclass(frozen=True)
class RealCheck:
    """Real trials against the table's prediction intervals."""

    trials: list[TrialCheck]
    failed_trials: int  # real trials without a score (errored): not checked
    repeated_trials: int  # real trials that repeated a checked one (same configuration, epochs and score): not counted
    inside_p: float  # one-sided binomial p of "fewer inside than CONFIDENCE promises"
    rank_correlation: float  # Spearman's rho of real against predicted scores
    rank_p: float  # one-sided p of "no positive rank correlation"

    @property
    def inside_share(self) -> float:
        return float(np.mean([c.inside for c in self.trials])) if self.trials else math.nan

    @property
    def passed(self) -> bool:
        return bool(self.trials) and self.inside_p >= ALPHA and self.rank_p < ALPHA


def _epoch_scores(table: Table, metric: str, configuration: int, epoch: int) -> list[float]:
    return [run.score(metric, epoch) for seed in table.seeds
            if len((run := table.run(configuration, seed)).epochs) >= epoch]


def prediction_interval(table: Table, metric: str, configuration: int, epoch: int,
                        confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): where one more run of ``configuration`` should score at ``epoch``.

    The mean of its recorded seeds (n of them) ± t · s · sqrt(1 + 1/n), s the seed sd pooled over
    every configuration's runs at that epoch (its degrees of freedom: the runs less one per
    configuration).
    """
    groups = [np.asarray(_epoch_scores(table, metric, c, epoch)) for c in range(table.configs)]
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        raise TableError(f"the table has no configuration with 2 runs at epoch {epoch}: no seed spread to predict with")
    pooled = math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in groups if len(g) > 1) / df)
    own = groups[configuration]
    if len(own) == 0:
        raise TableError(f"configuration {configuration} has no recorded run that reached epoch {epoch}")
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * pooled * math.sqrt(1 + 1 / len(own))
    mean = float(own.mean())
    return mean, mean - half, mean + half


def check_real(sweeps: list[RealSweep], table: Table, metric: str) -> RealCheck:
    """Each distinct real run against its prediction interval.

    Every trial trains with the train section's seed, so two trials of one configuration that reach
    the same epoch are the same run (their scores agree to the digit on one machine): one observation,
    counted once. (Counting it twice would treat one run as two independent draws.)
    """
    checks, failed, seen = [], 0, set()
    for sweep in sweeps:
        for trial in sweep.trials:
            if not math.isfinite(trial.score):
                failed += 1
                continue
            if trial in seen:
                continue
            seen.add(trial)
            checks.append(TrialCheck(sweep.name, trial, *prediction_interval(table, metric, trial.configuration,
                                                                              trial.epochs)))
    repeated = sum(math.isfinite(t.score) for sweep in sweeps for t in sweep.trials) - len(checks)
    if not checks:
        return RealCheck([], failed, repeated, math.nan, math.nan, math.nan)
    inside = sum(c.inside for c in checks)
    inside_p = float(stats.binomtest(inside, len(checks), CONFIDENCE, alternative="less").pvalue)
    real, predicted = [c.trial.score for c in checks], [c.predicted for c in checks]
    if len(checks) < 3 or len(set(real)) < 2 or len(set(predicted)) < 2:
        rho, rank_p = math.nan, 1.0  # nothing to rank: the ranking is not confirmed
    else:
        result = stats.spearmanr(real, predicted, alternative="greater")
        rho, rank_p = float(result.statistic), float(result.pvalue)
    return RealCheck(checks, failed, repeated, inside_p, rho, rank_p)


def real_json(sweeps: list[RealSweep], check: RealCheck) -> dict[str, Any]:
    return {
        "sweeps": {s.name: {"variant": s.variant.label, "seed": s.seed, "picked": s.picked, "trials": len(s.trials),
                            "trial_epochs": s.trial_epochs} for s in sweeps},
        "trials_checked": len(check.trials), "trials_failed": check.failed_trials,
        "trials_repeated": check.repeated_trials,
        "inside_share": None if not check.trials else round(check.inside_share, 4),
        "inside_p": None if not check.trials else round(check.inside_p, 6),
        "rank_correlation": None if math.isnan(check.rank_correlation) else round(check.rank_correlation, 4),
        "rank_p": None if not check.trials else round(check.rank_p, 6),
        "passed": check.passed,
    }
