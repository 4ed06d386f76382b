"""Real Ray Tune sweeps on a recorded table: each trial reports its configuration's recorded curve.

A sweep is built as the tune stage builds one (:func:`build_search_alg`, :func:`build_scheduler`,
the declared search space, the train section's values as the first trial); only the trainable
differs. A trial maps its proposal to a grid configuration (:meth:`Grid.index_of`), picks one
of the recorded seeds (drawn from the sweep's seed and the trial's proposal number, so the
same sweep seed replays the same sweep) and reports that run's val scores epoch by epoch, so
ASHA stops it exactly where it would have stopped the real trial. A run that diverged fails
its trial at the epoch it diverged.

Many sweeps share one ``ray.init`` and one trainable; each sweep's folder is deleted once its
callback has collected what the comparison needs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial

from pedtune.benchmark.grid import Grid
from pedtune.benchmark.table import Table
from pedtune.config import StudyConfig
from pedtune.benchmark.trial import replay_trial, sweep_name
from pedtune.tune.results import trial_dirname
from pedtune.tune.searchers import build_scheduler, build_search_alg
from pedtune.tune.space import param_space


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
    tune_iterations: int  # the trials' training_iteration as Tune counted them, summed


def replay_trainable(table: Table, grid: Grid, metric: str) -> Any:
    """The trainable of every sweep on ``table`` (Ray must be initialised: the table goes into its object store)."""
    # A replayed trial needs next to no CPU: the searcher's limit sets the concurrency.
    return tune.with_resources(tune.with_parameters(replay_trial, table=table, grid=grid, metric=metric),
                               {"cpu": 0.01})


def run_sweep(config: StudyConfig, trainable: Any, storage: Path) -> Sweep:
    """One sweep with ``config.tune``'s searcher, scheduler, budget and seed, of :func:`replay_trainable`."""
    log = ReplayLog(config.tune.metric)
    name = sweep_name(config.tune.searcher, config.tune.scheduler, config.tune.num_samples, config.tune.seed)
    tuner = tune.Tuner(
        trainable,
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
    grid_result = tuner.fit()
    wall_s = time.perf_counter() - started
    iterations = sum(int(result.metrics.get("training_iteration", 0)) for result in grid_result)
    shutil.rmtree(storage / name, ignore_errors=True)
    trials = tuple(sorted(log.trials.values(), key=lambda t: t.proposal))
    return Sweep(config.tune.seed, trials, tuple(log.events), wall_s, iterations)


@contextmanager
def replay_session() -> Iterator[Path]:
    """A local Ray for many replayed sweeps, and a scratch folder for their Tune state; both go at the end."""
    # verbose=0 silences only the classic output engine; the new one prints a box per sweep.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    storage = Path(tempfile.mkdtemp(prefix="pedtune-replay-"))
    owned = not ray.is_initialized()  # inside a caller's session (tests), that session is used
    if owned:
        # Each sweep's trials run in a fresh worker; Ray keeps idle workers started ahead, and
        # these imports (ray.tune alone takes seconds) then happen there, between sweeps.
        os.environ["RAY_preload_python_modules"] = f"ray.tune,{replay_trial.__module__}"
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
    try:
        yield storage
    finally:
        if owned:
            ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
