"""The recorded table's own noise: its training seeds resampled, and the searcher seeds with them.

A configuration's worth is its mean final score over a handful of training seeds, so the table's
best configuration and every regret measured against it are estimates. One resample draws each
configuration's seeds with replacement (the runs of one configuration are exchangeable) and
re-scores each replayed sweep's pick against that resample's best. The picks are held fixed:
the sweeps are not replayed on the resampled table, so a resample changes what a pick is worth,
not which configuration was picked (the cheap, first-order part of a hierarchical bootstrap).
Each resample also draws the searcher seeds with replacement (jointly for a paired comparison),
so an interval from these draws carries both noise sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedtune.replay.table import Table


@dataclass(frozen=True)
class TableResamples:
    """``worth[b, c]``: configuration c's mean final score in resample b; ``best``: the table's own best."""

    worth: np.ndarray
    best: int

    @property
    def best_changed(self) -> float:
        """The share of resamples whose best configuration is not the table's."""
        return float(np.mean(self.worth.argmax(axis=1) != self.best))

    def regrets(self, picks: list[int]) -> np.ndarray:
        """resamples × sweeps: each resample's best worth minus its pick's (a sweep that picked nothing: all of it)."""
        chosen = np.asarray(picks)
        picked = np.where(chosen >= 0, self.worth[:, np.maximum(chosen, 0)], 0.0)
        return self.worth.max(axis=1, keepdims=True) - picked


def final_scores(table: Table, metric: str) -> np.ndarray:
    """configurations × seeds: each run's final score (0 for a run that diverged)."""
    return np.asarray([[table.run(c, s).final(metric, table.epochs) for s in table.seeds]
                       for c in range(table.configs)], dtype=np.float64)


def resample_table(finals: np.ndarray, resamples: int, rng: np.random.Generator) -> TableResamples:
    configs, seeds = finals.shape
    drawn = rng.integers(0, seeds, size=(resamples, configs, seeds))
    worth = finals[np.arange(configs)[None, :, None], drawn].mean(axis=2)
    return TableResamples(worth, int(finals.mean(axis=1).argmax()))


def _seed_means(regrets: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    return np.take_along_axis(regrets, drawn, axis=1).mean(axis=1)


def regret_draws(noise: TableResamples, picks: list[int], rng: np.random.Generator) -> np.ndarray:
    """One mean regret per resample: table seeds and searcher seeds resampled."""
    regrets = noise.regrets(picks)
    return _seed_means(regrets, rng.integers(0, len(picks), size=regrets.shape))


def difference_draws(noise: TableResamples, picks_a: list[int], picks_b: list[int], paired: bool,
                     rng: np.random.Generator) -> np.ndarray:
    """One mean-regret difference (a − b) per resample; paired: both variants' seeds drawn together."""
    regrets_a, regrets_b = noise.regrets(picks_a), noise.regrets(picks_b)
    drawn_a = rng.integers(0, len(picks_a), size=regrets_a.shape)
    drawn_b = drawn_a if paired else rng.integers(0, len(picks_b), size=regrets_b.shape)
    return _seed_means(regrets_a, drawn_a) - _seed_means(regrets_b, drawn_b)


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def sign_flips(draws: np.ndarray, observed: float) -> float:
    """The share of draws on the other side of 0 from the observed difference."""
    return float(np.mean(np.sign(draws) == -np.sign(observed))) if observed != 0 else float("nan")
