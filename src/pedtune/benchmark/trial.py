"""The function trainable of a replayed sweep, in a module of its own.

Each sweep starts a fresh Ray worker for its trials, which imports this module: it imports
only what a trial needs (not the searchers, Optuna and HyperOpt), to keep that start short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from pedtune.benchmark.grid import Grid
from pedtune.benchmark.table import Table
from pedtune.errors import NonFiniteLossError


def proposal_number(trial_dir: str) -> int:
    """``trial_0003_<id>`` (the tune stage's trial folder name) -> 3."""
    return int(Path(trial_dir).name.split("_")[1])


def recorded_seed(table: Table, sweep_seed: int, proposal: int) -> int:
    """Which recorded seed's curve a trial replays: a draw fixed by the sweep's seed and the proposal."""
    return table.seeds[int(np.random.default_rng([sweep_seed, proposal]).integers(len(table.seeds)))]


def sweep_name(searcher: str, scheduler: str, budget: int, seed: int) -> str:
    """A replayed sweep's experiment name; its trials read the sweep's seed back from it (:func:`sweep_seed`)."""
    return f"{searcher}-{scheduler}-{budget}-{seed}"


def sweep_seed(experiment_name: str) -> int:
    return int(experiment_name.rsplit("-", 1)[1])


def replay_trial(sample: dict[str, Any], *, table: Table, grid: Grid, metric: str) -> None:
    """The function trainable of a replayed sweep: one for every sweep on a table (put into Ray's
    object store once), the sweep's seed read from the sweep's name."""
    context = tune.get_context()
    number = grid.index_of(sample)
    proposal = proposal_number(context.get_trial_dir())
    seed = recorded_seed(table, sweep_seed(context.get_experiment_name()), proposal)
    run = table.run(number, seed)
    for epoch, scores in enumerate(run.epochs, start=1):
        tune.report({metric: scores[metric], "epoch": epoch, "configuration": number, "recorded_seed": seed,
                     "recorded_time_s": scores.get("epoch_time_s", 0.0)})
    if run.diverged_at is not None:
        raise NonFiniteLossError(run.diverged_at, 0, {"recorded": float("nan")})
