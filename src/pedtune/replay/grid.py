"""The recorded grid: which configurations ``pedtune record`` trains, and which one a proposal stands for.

Each searched parameter's declared distribution is cut into ``record.levels[param]`` equally
likely bins (equal widths on its own scale: log for the log distributions); the grid value
of a bin is its midpoint, the value the trial trains. A ``choice`` keeps each of its values.
The grid is the product of the parameters' values.

A replayed sweep searches the declared space itself, as the tune stage does, and each
proposal is mapped to the grid point of the bins it falls in. The searchers keep their model
of the ordered, continuous space, and random search, drawing from the declared
distributions, lands on every grid configuration with the same probability (exactly so
before ``q`` rounding moves a draw across a bin edge).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pedtune.config import ConfigError, StudyConfig
from pedtune.config.schema import Distribution
from pedtune.tune.space import typed_value

LOG_TYPES = ("loguniform", "qloguniform")


def _scale(dist: Distribution) -> tuple[float, float, bool]:
    lower, upper = float(dist.lower), float(dist.upper)  # type: ignore[arg-type]
    if dist.type in LOG_TYPES:
        return math.log(lower), math.log(upper), True
    return lower, upper, False


def level_values(dist: Distribution, levels: int) -> list[Any]:
    """The grid values of one parameter, as a trial trains them (on the ``q`` grid, typed)."""
    if dist.type == "choice":
        return [typed_value(dist, value) for value in dist.values or []]
    low, high, log = _scale(dist)
    if dist.type == "randint":
        width = (high - low) / levels
        return [typed_value(dist, int(low + math.floor((i + 0.5) * width))) for i in range(levels)]
    mids = [low + (i + 0.5) * (high - low) / levels for i in range(levels)]
    # Six significant digits (1e-4, not 9.999999999999991e-05): the value a reader sees is the one trained.
    return [typed_value(dist, float(f"{math.exp(m) if log else m:.6g}")) for m in mids]


def level_of(dist: Distribution, levels: int, value: Any) -> int:
    """The bin a proposed value falls in (a choice's value: its position among the values)."""
    typed = typed_value(dist, value)
    if dist.type == "choice":
        return level_values(dist, levels).index(typed)
    low, high, log = _scale(dist)
    position = math.log(float(typed)) if log else float(typed)
    index = math.floor((position - low) / (high - low) * levels)
    return min(max(index, 0), levels - 1)


def check_levels(config: StudyConfig) -> dict[str, int]:
    """``record.levels`` checked against the search space: the level count of every searched parameter."""
    space = {dist.param: dist for dist in config.tune.search_space}
    declared = dict(config.record.levels)
    problems = [f"record.levels names {param}, which tune.search_space does not search" for param in declared
                if param not in space]
    levels: dict[str, int] = {}
    for param, dist in space.items():
        if param == "train.seed":
            problems.append("tune.search_space searches train.seed: a recording trains every configuration at "
                            "each of record.seeds instead")
        elif dist.type == "choice":
            if param in declared:
                problems.append(f"record.levels names {param}, a choice: every one of its values is recorded")
            levels[param] = len(dist.values or [])
        elif param not in declared:
            problems.append(f"record.levels has no entry for {param} (how many values of it to record)")
        else:
            levels[param] = declared[param]
            if dist.type == "randint" and declared[param] > int(dist.upper) - int(dist.lower):  # type: ignore[arg-type]
                problems.append(f"record.levels asks for {declared[param]} values of {param}, a randint with fewer")
    if problems:
        raise ConfigError("the recording's grid does not fit: " + "; ".join(problems))
    return levels


@dataclass(frozen=True)
class Grid:
    """The recorded configurations, in recording order (the first parameter varies slowest)."""

    space: tuple[Distribution, ...]
    levels: dict[str, int]

    @classmethod
    def from_config(cls, config: StudyConfig) -> "Grid":
        return cls(tuple(config.tune.search_space), check_levels(config))

    @property
    def params(self) -> list[str]:
        return [dist.param for dist in self.space]

    def values(self, param: str) -> list[Any]:
        dist = next(d for d in self.space if d.param == param)
        return level_values(dist, self.levels[param])

    def configurations(self) -> list[dict[str, Any]]:
        """Every grid point as ``train.*`` overrides; a configuration's number is its index here."""
        axes = [self.values(param) for param in self.params]
        return [dict(zip(self.params, point)) for point in itertools.product(*axes)]

    def index_of(self, sample: Mapping[str, Any]) -> int:
        """The number of the configuration whose bins hold a searcher's proposal."""
        index = 0
        for dist in self.space:
            count = self.levels[dist.param]
            index = index * count + level_of(dist, count, sample[dist.param])
        return index
