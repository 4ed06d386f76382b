"""Real Ray Tune sweeps on a recorded table: each trial reports its configuration's recorded curve.

A sweep is built as the tune stage builds one (:func:`build_search_alg`, :func:`build_scheduler`,
the declared search space, the train section's values as the first trial); only the trainable
differs. A trial maps its proposal to a grid configuration (:meth:`Grid.index_of`), picks one
of the recorded seeds (drawn from the sweep's seed and the trial's proposal number, so the
same sweep seed replays the same sweep) and reports that run's val scores epoch by epoch, so
ASHA stops it exactly where it would have stopped the real trial. A run that diverged fails
its trial at the epoch it diverged.

Many sweeps share one ``ray.init``. Sweeps run side by side, each driven by a :class:`SweepRunner`:
a Ray actor, so each Tune driver has a process (and Tune's trainable registry, which is not
thread-safe) of its own; one runner drives its sweeps one after another with one trainable. Each
sweep's folder is deleted once its callback has collected what the comparison needs.
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

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial

from pedtune.replay.grid import Grid
from pedtune.replay.table import Table
from pedtune.config import StudyConfig
from pedtune.replay.trial import ReplayTrial, sweep_name
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


# A running replayed trial holds one (its CPU use is negligible). Tune starts an actor for each
# staged trial that resources allow; were they plentiful, it would start one per trial instead
# of reusing the actor of a finished one.
REPLAY_SLOT = "replay_trial"


def replay_trainable(table: Table, grid: Grid, metric: str) -> Any:
    """The trainable of every sweep on ``table`` (Ray must be initialised: the table goes into its object store)."""
    return tune.with_resources(tune.with_parameters(ReplayTrial, table=table, grid=grid, metric=metric),
                               {"cpu": 0, REPLAY_SLOT: 1})


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
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                                  # Nothing to save, and a trial saved at its end does not pass on its actor.
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),
    )
    started = time.perf_counter()
    grid_result = tuner.fit()
    wall_s = time.perf_counter() - started
    iterations = sum(int(result.metrics.get("training_iteration", 0)) for result in grid_result)
    shutil.rmtree(storage / name, ignore_errors=True)
    trials = tuple(sorted(log.trials.values(), key=lambda t: t.proposal))
    return Sweep(config.tune.seed, trials, tuple(log.events), wall_s, iterations)


# The classic output engine, silenced by verbose=0 (the new one prints a box per sweep).
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0"}


@ray.remote(num_cpus=0)
class SweepRunner:
    """A Tune driver in a Ray worker process of its own, for sweeps one after another on one table."""

    def __init__(self, table: Table, grid: Grid, metric: str, storage: str) -> None:
        self.trainable = replay_trainable(table, grid, metric)
        self.storage = Path(storage)

    def run(self, config: StudyConfig) -> Sweep:
        return run_sweep(config, self.trainable, self.storage)


def sweep_runners(count: int, table: Table, grid: Grid, metric: str, storage: Path) -> list[Any]:
    """``count`` :class:`SweepRunner` actors; the table goes into Ray's object store once for all."""
    table_ref = ray.put(table)
    runner = SweepRunner.options(runtime_env={"env_vars": QUIET_TUNE})
    return [runner.remote(table_ref, grid, metric, str(storage)) for _ in range(count)]


@contextmanager
def replay_session(slots: int) -> Iterator[Path]:
    """A local Ray for many replayed sweeps, ``slots`` trials running at once in all, and a scratch folder for
    their Tune state; both go at the end."""
    os.environ.update(QUIET_TUNE)
    storage = Path(tempfile.mkdtemp(prefix="pedtune-replay-"))
    owned = not ray.is_initialized()  # inside a caller's session, that session is used
    if owned:
        # Each sweep's trials run in fresh workers; Ray keeps idle workers started ahead, and
        # these imports (ray.tune alone takes seconds) then happen there, between sweeps.
        os.environ["RAY_preload_python_modules"] = f"ray.tune,{ReplayTrial.__module__}"
        ray.init(num_cpus=os.cpu_count() or 1, resources={REPLAY_SLOT: slots}, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    try:
        yield storage
    finally:
        if owned:
            ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
