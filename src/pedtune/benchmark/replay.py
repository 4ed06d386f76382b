"""Real Ray Tune sweeps on a recorded table: each trial reports its configuration's recorded curve.

A sweep is built as the tune stage builds one (:func:`build_search_alg`, :func:`build_scheduler`,
the declared search space, the train section's values as the first trial); only the trainable
differs. A trial maps its proposal to a grid configuration (:meth:`Grid.index_of`), picks one
of the recorded seeds (drawn from the sweep's seed and the trial's proposal number, so the
same sweep seed replays the same sweep) and reports that run's val scores epoch by epoch, so
ASHA stops it exactly where it would have stopped the real trial. A run that diverged fails
its trial at the epoch it diverged.

Many sweeps share one ``ray.init``; each sweep's folder is deleted once its callback has
collected what the comparison needs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial

from pedtune.benchmark.grid import Grid
from pedtune.benchmark.table import Table
from pedtune.config import StudyConfig
from pedtune.errors import NonFiniteLossError
from pedtune.tune.results import trial_dirname
from pedtune.tune.searchers import build_scheduler, build_search_alg
from pedtune.tune.space import param_space


def proposal_number(trial_dir: str) -> int:
    """``trial_0003_<id>`` (the tune stage's trial folder name) -> 3."""
    return int(Path(trial_dir).name.split("_")[1])


def recorded_seed(table: Table, sweep_seed: int, proposal: int) -> int:
    """Which recorded seed's curve a trial replays: a draw fixed by the sweep's seed and the proposal."""
    return table.seeds[int(np.random.default_rng([sweep_seed, proposal]).integers(len(table.seeds)))]


def replay_trial(sample: dict[str, Any], *, table: Table, grid: Grid, metric: str, sweep_seed: int) -> None:
    """The function trainable of a replayed sweep."""
    number = grid.index_of(sample)
    proposal = proposal_number(tune.get_context().get_trial_dir())
    seed = recorded_seed(table, sweep_seed, proposal)
    run = table.run(number, seed)
    for epoch, scores in enumerate(run.epochs, start=1):
        tune.report({metric: scores[metric], "epoch": epoch, "configuration": number, "recorded_seed": seed,
                     "recorded_time_s": scores.get("epoch_time_s", 0.0)})
    if run.diverged_at is not None:
        raise NonFiniteLossError(run.diverged_at, 0, {"recorded": float("nan")})


@dataclass
class ReplayedTrial:
    proposal: int
    configuration: int = -1
    seed: int = -1
    scores: list[float] = field(default_factory=list)
    errored: bool = False


class ReplayLog(Callback):
    """Every report of a sweep, in the order the driver received it (the sweep's time axis)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.trials: dict[str, ReplayedTrial] = {}
        self.events: list[tuple[int, int]] = []  # (proposal, epoch)

    def _trial(self, trial: Trial) -> ReplayedTrial:
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = ReplayedTrial(int(trial.experiment_tag.partition("_")[0]))
        return self.trials[trial.trial_id]

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        record = self._trial(trial)
        record.configuration, record.seed = int(result["configuration"]), int(result["recorded_seed"])
        record.scores.append(float(result[self.metric]))
        self.events.append((record.proposal, len(record.scores)))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._trial(trial).errored = True


@dataclass(frozen=True)
class Sweep:
    """What one replayed sweep did: its trials in proposal order and the order of their reports."""

    seed: int
    trials: tuple[ReplayedTrial, ...]
    events: tuple[tuple[int, int], ...]
    wall_s: float


def run_sweep(config: StudyConfig, table: Table, grid: Grid, storage: Path) -> Sweep:
    """One sweep with ``config.tune``'s searcher, scheduler, budget and seed (Ray must be initialised)."""
    log = ReplayLog(config.tune.metric)
    trainable = tune.with_parameters(replay_trial, table=table, grid=grid, metric=config.tune.metric,
                                     sweep_seed=config.tune.seed)
    name = f"{config.tune.searcher}-{config.tune.scheduler}-{config.tune.num_samples}-{config.tune.seed}"
    tuner = tune.Tuner(
        # A replayed trial needs next to no CPU: the searcher's limit sets the concurrency.
        tune.with_resources(trainable, {"cpu": 0.01}),
        param_space=param_space(config.tune.search_space),
        tune_config=tune.TuneConfig(
            metric=config.tune.metric, mode=config.tune.mode, search_alg=build_search_alg(config),
            scheduler=build_scheduler(config), num_samples=config.tune.num_samples, reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=[log], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    )
    started = time.perf_counter()
    tuner.fit()
    wall_s = time.perf_counter() - started
    shutil.rmtree(storage / name, ignore_errors=True)
    trials = tuple(sorted(log.trials.values(), key=lambda t: t.proposal))
    return Sweep(config.tune.seed, trials, tuple(log.events), wall_s)


def quiet_tune() -> None:
    """No experiment box per sweep (verbose=0 silences the classic output engine only)."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def scratch_storage() -> Path:
    return Path(tempfile.mkdtemp(prefix="pedtune-replay-"))
