"""The sweep's progress on the driver's console: each trial that ends, the best so far, an ETA.

Trials' own output (per-step progress) stays in their logs; this is what the person who
started ``pedtune tune`` reads. The ETA is the wall time per trial-epoch so far in this run
of the stage times the trial-epochs the sweep still has to train, counted as successive
halving would keep trials (:func:`pedtune.engine.estimate.sweep_trial_epochs`): ASHA is
asynchronous and noisy, so it is a guide, not a promise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from pedtune import console
from pedtune.config import StudyConfig
from pedtune.config.schema import Distribution
from pedtune.engine.estimate import sweep_basis, sweep_trial_epochs
from pedtune.tune.space import decode_sample
from pedtune.units import duration

log = console.get(__name__)
EPOCH = "training_iteration"  # one report per epoch: Tune's iteration is the epoch


class SweepProgress(Callback):
    """Logs a line when a trial completes, is stopped by the scheduler or errors.

    Picklable (Tune saves the callbacks with the sweep and a resumed sweep runs that copy);
    :meth:`setup` restarts the clock on every run of the stage.
    """

    def __init__(self, config: StudyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        tune = config.tune
        self.num_samples = tune.num_samples
        self.metric = tune.metric
        self.space: list[Distribution] = list(tune.search_space)
        self.max_epochs = config.asha_max_t if tune.scheduler == "asha" else config.train.epochs
        self.min_epochs = tune.asha.grace_period if tune.scheduler == "asha" else config.train.epochs
        self.budget = sweep_trial_epochs(config)
        self.budget_basis = sweep_basis(config)
        self.clock = clock
        self.setup()

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self._started = self.clock()
        self._epochs_here = 0  # trial-epochs reported since this run of the stage began

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self._epochs_here += 1

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        epochs = _epochs(trial)
        how = (f"finished all {epochs} epochs" if epochs >= self.max_epochs
               else f"stopped by the scheduler after {epochs} of {self.max_epochs} epochs")
        score = _score(trial, self.metric)
        shown = f": val {self.metric} {score:.4f}" if score is not None else ""
        log.info(self.report(trials, trial, f"{how}{shown}"))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        epochs = _epochs(trial)
        log.warning(self.report(trials, trial, f"failed after {epochs} epoch{'' if epochs == 1 else 's'}: "
                                               f"{_error_line(trial)}"))

    def report(self, trials: Sequence[Trial], trial: Trial, outcome: str) -> str:
        """Three lines: this trial, the best so far and the ETA."""
        ended = {t.trial_id for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)} | {trial.trial_id}
        lines = [f"trial {len(ended)} of {self.num_samples} ({trial.trial_id}) {outcome}", self.best_line(trials)]
        lines.append(self.eta_line(trials, ended))
        return "\n".join(lines)

    def best_line(self, trials: Sequence[Trial]) -> str:
        """The sweep's rule (:func:`pedtune.tune.results.best_trial`): only trials that ran every
        epoch compete; until one has, the furthest trials' best score stands in."""
        scored = [t for t in trials if t.status != Trial.ERROR and _score(t, self.metric) is not None]
        full = [t for t in scored if _epochs(t) >= self.max_epochs]
        if full:
            best, note = max(full, key=lambda t: _score(t, self.metric)), ""
        elif scored:
            furthest = max(_epochs(t) for t in scored)
            best = max((t for t in scored if _epochs(t) == furthest), key=lambda t: _score(t, self.metric))
            note = f" at epoch {furthest}; no trial has run all {self.max_epochs} epochs yet"
        else:
            return "best so far: none scored yet"
        params = ", ".join(f"{key}={value}" for key, value in decode_sample(best.config, self.space).items())
        return f"best so far: val {self.metric} {_score(best, self.metric):.4f}{note} (trial {best.trial_id}: {params})"

    def eta_line(self, trials: Sequence[Trial], ended: set[str]) -> str:
        done = sum(_epochs(t) for t in trials)
        unstarted = self.num_samples - len(trials)
        # Every trial still to come trains at least to the first rung.
        at_least = unstarted * self.min_epochs + sum(
            max(0, self.min_epochs - _epochs(t)) for t in trials if t.trial_id not in ended
        )
        left = max(self.budget - done, at_least)
        if len(ended) >= self.num_samples or left <= 0:
            return "ETA: the sweep is ending"
        elapsed = self.clock() - self._started
        if self._epochs_here == 0:
            return f"ETA unknown yet ({left:.0f} trial-epochs left)"
        per_epoch = elapsed / self._epochs_here
        plural = "" if round(left) == 1 else "s"
        return (f"ETA {duration(per_epoch * left)}: about {left:.0f} trial-epoch{plural} left of "
                f"{self.budget:.0f} ({self.budget_basis}), {duration(per_epoch)} per trial-epoch so far")


def _epochs(trial: Trial) -> int:
    return int((trial.last_result or {}).get(EPOCH) or 0)


def _score(trial: Trial, metric: str) -> float | None:
    value = (trial.last_result or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _error_line(trial: Trial) -> str:
    """The last line of the trial's error file (the exception), or where to find it."""
    try:
        path = trial.error_file
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        return lines[-1][:300] if lines else "see the trial's error.txt"
    except (OSError, TypeError, AttributeError):
        return "see the trial's error.txt"
