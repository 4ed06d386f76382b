"""The trainable of a replayed sweep, in a module of its own.

Each sweep starts fresh Ray workers for its trials, which import this module: it imports only
what a trial needs (not the searchers, Optuna and HyperOpt), to keep that start short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from pedtune.replay.grid import Grid
from pedtune.replay.table import Table
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


class ReplayTrial(tune.Trainable):
    """The trainable of a replayed sweep: one step reports one recorded epoch of the trial's configuration.

    A class, not a function: Tune reuses its actor for the sweep's next trial (``reset_config``)
    instead of starting a Ray worker per trial, which is most of a replayed trial's cost. The
    sweep's seed is read from the sweep's name, the proposal number from the trial's folder name.
    """

    def setup(self, config: dict[str, Any], *, table: Table, grid: Grid, metric: str) -> None:
        self.table, self.grid, self.metric = table, grid, metric
        self.reset_config(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.configuration = self.grid.index_of(new_config)
        # Tune's storage context of this trial (reset with the trial): the names Tune gave it.
        proposal = proposal_number(self._storage.trial_dir_name)
        self.seed = recorded_seed(self.table, sweep_seed(self._storage.experiment_dir_name), proposal)
        self.run = self.table.run(self.configuration, self.seed)
        return True

    def step(self) -> dict[str, Any]:
        epoch = self.iteration + 1
        if epoch > len(self.run.epochs):  # only a run that diverged has fewer epochs than the trial
            raise NonFiniteLossError(epoch, 0, {"recorded": float("nan")})
        scores = self.run.epochs[epoch - 1]
        return {self.metric: scores[self.metric], "epoch": epoch, "configuration": self.configuration,
                "recorded_seed": self.seed, "recorded_time_s": scores.get("epoch_time_s", 0.0),
                "done": epoch == self.table.epochs}
