"""``tune.searcher`` and ``tune.scheduler`` as Ray Tune objects, seeded, starting from the initial config."""

from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher
from ray.tune.search.hyperopt import HyperOptSearch
from ray.tune.search.optuna import OptunaSearch

from pedtune.config import StudyConfig
from pedtune.config.schema import TuneConfig
from pedtune.tune.space import initial_point


def n_initial_points(cfg: TuneConfig) -> int:
    """Start-up trials before TPE models the results: a third of the budget by default.

    HyperOpt's own default (20) would exceed a small sweep, which then never uses TPE. Both
    libraries count the initial config (``points_to_evaluate``) as one of these trials.
    """
    if cfg.n_initial_points is not None:
        return cfg.n_initial_points
    return max(1, cfg.num_samples // 3)


def _model_based_searcher(config: StudyConfig) -> Searcher:
    cfg = config.tune
    points = [initial_point(config)]
    if cfg.searcher == "hyperopt":
        return HyperOptSearch(
            points_to_evaluate=points, n_initial_points=n_initial_points(cfg), random_state_seed=cfg.seed
        )
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=n_initial_points(cfg))
    return OptunaSearch(points_to_evaluate=points, sampler=sampler)


def build_search_alg(config: StudyConfig) -> SearchAlgorithm | Searcher:
    """The searcher, limited to ``max_concurrent`` live trials; the initial config is trial 1."""
    cfg = config.tune
    if cfg.searcher == "random":
        return BasicVariantGenerator(
            points_to_evaluate=[initial_point(config)], max_concurrent=cfg.max_concurrent, random_state=cfg.seed
        )
    return ConcurrencyLimiter(_model_based_searcher(config), max_concurrent=cfg.max_concurrent)


def build_scheduler(config: StudyConfig) -> TrialScheduler:
    """ASHA over epochs (one report per epoch, so ``training_iteration`` is the epoch), or FIFO."""
    cfg = config.tune
    if cfg.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=config.asha_max_t,
        grace_period=cfg.asha.grace_period,
        reduction_factor=cfg.asha.reduction_factor,
    )
