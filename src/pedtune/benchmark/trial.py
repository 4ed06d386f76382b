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
