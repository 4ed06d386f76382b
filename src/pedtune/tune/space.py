"""The declared search space: as Ray Tune domains, and the typed values a trial trains with.

Searchers differ in how faithfully they sample a domain: OptunaSearch drops the ``q`` of a
``qloguniform`` and proposes raw floats, HyperOpt yields numpy scalars. :func:`decode_sample`
turns whatever a searcher proposed into the values of the declared space (on the ``q``
grid, ``int`` where the train field is an int), so every searcher trains, logs and reports
the same kind of values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search.sample import Domain

from pedtune.config import StudyConfig
from pedtune.config.schema import Distribution


def ray_domain(dist: Distribution) -> Domain:
    """The Ray Tune domain of one entry; ``randint``'s upper bound is exclusive, as in Ray."""
    if dist.type == "choice":
        return tune.choice(list(dist.values or []))
    lower, upper = float(dist.lower), float(dist.upper)  # type: ignore[arg-type]
    if dist.type == "qloguniform":
        return tune.qloguniform(lower, upper, dist.q)
    if dist.type == "loguniform":
        return tune.loguniform(lower, upper)
    if dist.type == "quniform":
        return tune.quniform(lower, upper, dist.q)
    if dist.type == "uniform":
        return tune.uniform(lower, upper)
    return tune.randint(int(lower), int(upper))


def param_space(space: list[Distribution]) -> dict[str, Domain]:
    """``{"train.lr": tune.qloguniform(...), ...}``: flat dotted keys, also the MLflow param names."""
    return {dist.param: ray_domain(dist) for dist in space}


def _plain(value: Any) -> Any:
    """numpy scalars (HyperOpt) -> Python scalars, so pydantic, YAML and MLflow see plain values."""
    return value.item() if isinstance(value, np.generic) else value


def typed_value(dist: Distribution, value: Any) -> Any:
    """One proposed value as the trial uses it: on the ``q`` grid and of the train field's type."""
    return dist.train_value(_plain(value))


def decode_sample(sample: Mapping[str, Any], space: list[Distribution]) -> dict[str, Any]:
    """A trial's config (as proposed by the searcher) -> its ``train.*`` overrides."""
    return {dist.param: typed_value(dist, sample[dist.param]) for dist in space}


def initial_point(config: StudyConfig) -> dict[str, Any]:
    """The ``train:`` section's values of the searched params: every sweep's first trial."""
    return {dist.param: getattr(config.train, dist.train_key) for dist in config.tune.search_space}
