"""A compared sweep setting: searcher, scheduler and budget (trials per sweep)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    searcher: str
    scheduler: str
    budget: int

    @property
    def label(self) -> str:
        return f"{self.searcher}+{self.scheduler}, {self.budget} trials"
