"""One replayed sweep judged against the recorded table: what it picked, its regret and its cost."""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Outcome:
    """One sweep judged against the table."""

    seed: int
    picked: int  # configuration number; -1 if no trial finished
    picked_score: float  # the picked trial's final score on the seed it replayed (what the sweep reported)
    regret: float
    trial_epochs: int
    found_best: bool
    best_tried: bool
    best_stopped_early: bool
    curve: tuple[float, ...]  # the picked configuration's mean score after each report, in arrival order
    wall_s: float
