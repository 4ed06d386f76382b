"""The search space as Ray domains, the values a trial trains with, and the sweep's identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tune_study import study_params
from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.hyperopt import HyperOptSearch
from ray.tune.search.optuna import OptunaSearch

from pedtune.config import ConfigError, validate
from pedtune.config.schema import Distribution, quantize
from pedtune.tune.identity import sweep_id
from pedtune.tune.searchers import build_search_alg, n_initial_points
from pedtune.tune.space import decode_sample, initial_point, param_space

LR = Distribution(param="train.lr", type="qloguniform", lower=1e-4, upper=0.1, q=1e-4)
BATCH = Distribution(param="train.batch_size", type="choice", values=[2, 4, 8])


def _config(changes: dict | None = None):
    return validate(study_params(Path("/nonexistent"), changes))


@pytest.mark.parametrize(("lower", "upper", "q"), [(1e-4, 0.1, 1e-4), (0.5, 20.0, 0.25), (0.001, 0.3, 0.001)])
def test_quantizing_an_unrounded_sample_lands_where_tune_qloguniform_would(lower: float, upper: float, q: float):
    # tune.qloguniform draws log-uniformly between the bounds, then rounds to q; OptunaSearch
    # draws the same way but skips the rounding, which the trial then does.
    for seed in range(50):
        unrounded = tune.loguniform(lower, upper).sample(random_state=seed)
        on_grid = tune.qloguniform(lower, upper, q).sample(random_state=seed)
        assert quantize(unrounded, lower, upper, q) == pytest.approx(on_grid, rel=1e-12, abs=0)


def test_quantize_rounds_to_q_within_the_bounds_and_reads_as_written():
    assert quantize(0.0123456789, 1e-4, 0.1, 1e-4) == 0.0123
    assert quantize(0.005, 1e-4, 0.1, 1e-4) == 0.005  # not 0.005000000000000001
    assert quantize(0.00001, 1e-4, 0.1, 1e-4) == 1e-4
    assert quantize(0.5, 1e-4, 0.1, 1e-4) == 0.1
    assert quantize(7.3, 0.5, 20.0, 0.25) == 7.25


def test_a_trial_sees_grid_values_and_ints_whichever_searcher_proposed_them():
    space = [LR, BATCH, Distribution(param="train.epochs", type="randint", lower=1, upper=4),
             Distribution(param="train.optimizer", type="choice", values=["sgd", "adamw"])]
    optuna_style = {"train.lr": 0.012345678, "train.batch_size": 4, "train.epochs": 3, "train.optimizer": "adamw"}
    hyperopt_style = {"train.lr": np.float64(0.0123), "train.batch_size": np.int64(4), "train.epochs": 3.0,
                      "train.optimizer": "adamw"}
    for sample in (optuna_style, hyperopt_style):
        decoded = decode_sample(sample, space)
        assert decoded == {"train.lr": 0.0123, "train.batch_size": 4, "train.epochs": 3, "train.optimizer": "adamw"}
        assert type(decoded["train.batch_size"]) is int and type(decoded["train.epochs"]) is int
        assert type(decoded["train.lr"]) is float


def test_param_space_uses_ray_domains_under_dotted_names():
    space = param_space([LR, BATCH, Distribution(param="train.epochs", type="randint", lower=1, upper=4)])
    assert list(space) == ["train.lr", "train.batch_size", "train.epochs"]
    assert space["train.batch_size"].categories == [2, 4, 8]
    assert (space["train.epochs"].lower, space["train.epochs"].upper) == (1, 4)  # upper exclusive, as in Ray


def test_the_initial_point_is_the_train_section():
    config = _config({"train": {"lr": 0.02, "batch_size": 8}})
    assert initial_point(config) == {"train.lr": 0.02, "train.batch_size": 8, "train.weight_decay": 0.0005}


@pytest.mark.parametrize(
    ("train", "message"),
    [({"batch_size": 2}, "is not one of [4, 8]"), ({"lr": 0.00505}, "not a multiple of q=0.0001"),
     ({"weight_decay": 0.01}, "is outside [1e-05, 0.001]")],
)
def test_an_initial_config_outside_the_space_is_a_config_error(train: dict, message: str):
    # Read with the file, so every stage (and `pedtune check`) refuses it before any work.
    with pytest.raises(ConfigError, match="tune.search_space does not fit: the initial value") as error:
        _config({"train": train})
    assert message in str(error.value)


def test_quantized_bounds_off_the_q_grid_are_a_config_error():
    lr = {"param": "train.lr", "type": "qloguniform", "lower": 0.00015, "upper": 0.1, "q": 0.0001}
    with pytest.raises(ConfigError, match=r"tune.search_space.0: train.lr: lower 0.00015 is not a multiple of q=0.0001"):
        _config({"tune": {"search_space": [lr]}})


@pytest.mark.parametrize(
    ("num_samples", "explicit", "expected"), [(20, None, 6), (3, None, 1), (2, None, 1), (20, 4, 4)]
)
def test_tpe_starts_after_a_third_of_the_budget_by_default(num_samples: int, explicit: int | None, expected: int):
    config = _config({"tune": {"num_samples": num_samples, "n_initial_points": explicit}})
    assert n_initial_points(config.tune) == expected


@pytest.mark.parametrize(("searcher", "inner"), [("hyperopt", HyperOptSearch), ("optuna", OptunaSearch)])
def test_model_based_searchers_are_limited_to_max_concurrent(searcher: str, inner: type):
    algorithm = build_search_alg(_config({"tune": {"searcher": searcher, "max_concurrent": 2}}))
    assert isinstance(algorithm, ConcurrencyLimiter) and isinstance(algorithm.searcher, inner)
    assert algorithm.max_concurrent == 2


def test_model_based_searchers_get_the_start_up_size():
    def searcher(name: str):
        return build_search_alg(_config({"tune": {"searcher": name, "num_samples": 12, "n_initial_points": 5}})).searcher

    assert searcher("hyperopt").algo.keywords["n_startup_jobs"] == 5
    assert searcher("optuna")._sampler._n_startup_trials == 5


def test_random_search_starts_from_the_initial_point():
    config = _config({"tune": {"searcher": "random"}})
    algorithm = build_search_alg(config)
    assert isinstance(algorithm, BasicVariantGenerator)
    assert algorithm._points_to_evaluate == [initial_point(config)]


def test_the_sweep_id_changes_with_what_trials_compute_only():
    base = _config()
    # More CPUs per trial, on the thread count base derives from its 1 CPU per trial (train.threads: null).
    same = {"tune": {"resources_per_trial": {"cpu": 2}, "storage_path": "elsewhere", "max_failures": 3},
            "train": {"threads": 1}, "data": {"num_workers": 4}, "mlflow": {"experiment": "other"}}
    new = [{"tune": {"seed": 1}}, {"tune": {"searcher": "optuna"}}, {"tune": {"scheduler": "fifo"}},
           {"tune": {"num_samples": 4}}, {"train": {"momentum": 0.8}}, {"model": {"min_size": 56}},
           {"tune": {"search_space": [LR.model_dump()]}},
           {"tune": {"resources_per_trial": {"cpu": 2}}}]  # 2 threads: other figures on the CPU
    assert sweep_id(base, "d1") == sweep_id(_config(same), "d1")
    assert len(sweep_id(base, "d1")) == 12
    ids = {sweep_id(_config(change), "d1") for change in new} | {sweep_id(base, "d2"), sweep_id(base, "d1")}
    assert len(ids) == len(new) + 2
