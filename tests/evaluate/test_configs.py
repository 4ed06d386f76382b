from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pedtune.config import ConfigError, StudyConfig, validate
from pedtune.evaluate.configs import (
    TuneResultsError,
    read_best_params,
    read_search_cost,
    run_config,
    tuned_config,
    unsearched_differences,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config() -> StudyConfig:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["train"].update(device="cpu")
    return validate(raw)


def test_best_params_become_the_tuned_train_section(tmp_path: Path, config: StudyConfig):
    path = tmp_path / "best_params.yaml"
    path.write_text(yaml.safe_dump({**config.train.model_dump(), "lr": 0.02, "device": "cuda"}), encoding="utf-8")
    tuned = tuned_config(config, read_best_params(path))
    assert tuned.train.lr == 0.02 and tuned.train.batch_size == config.train.batch_size
    assert tuned.train.device == "cpu"  # the evaluating machine's choice, not the tuning machine's
    assert tuned.model == config.model and config.train.lr != 0.02


def test_a_section_pasted_under_train_is_read_the_same(tmp_path: Path):
    path = tmp_path / "best_params.yaml"
    path.write_text("train:\n  lr: 0.02\n", encoding="utf-8")
    assert read_best_params(path) == {"lr": 0.02}


@pytest.mark.parametrize("content", ["", "- 1\n- 2\n", "lr: [unclosed\n"])
def test_unusable_best_params_are_reported(tmp_path: Path, content: str):
    path = tmp_path / "best_params.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TuneResultsError, match="best_params.yaml"):
        read_best_params(path)
    with pytest.raises(TuneResultsError, match="dvc repro tune"):
        read_best_params(tmp_path / "missing.yaml")


def test_invalid_tuned_values_fail_validation(config: StudyConfig):
    with pytest.raises(ConfigError, match="learning_rate"):
        tuned_config(config, {"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="lr"):
        tuned_config(config, {"lr": -1.0})


def test_a_tuned_config_that_differs_where_the_search_does_not_look_is_named(config: StudyConfig):
    # As the tune stage writes it: params.yaml's train section with the searched keys changed.
    fresh = tuned_config(config, {**config.train.model_dump(), "lr": 0.02, "seed": 5, "device": "cuda"})
    assert unsearched_differences(config, fresh) == []
    # params.yaml changed after the sweep: epochs and hflip_prob come from the older sweep.
    stale = tuned_config(config, {**config.train.model_dump(), "lr": 0.02, "epochs": 3, "hflip_prob": 0.0})
    assert unsearched_differences(config, stale) == [
        f"train.epochs {config.train.epochs} (params.yaml) vs 3 (tuned)",
        f"train.hflip_prob {config.train.hflip_prob} (params.yaml) vs 0.0 (tuned)",
    ]


def test_run_config_sets_the_seed_and_optionally_the_epochs(config: StudyConfig):
    default = run_config(config, 7, None).train
    assert (default.seed, default.epochs) == (7, config.train.epochs)
    assert run_config(config, 7, 3).train.epochs == 3


def test_search_cost_is_none_where_not_recorded(tmp_path: Path):
    path = tmp_path / "tune.json"
    none = {"num_trials": None, "trial_epochs": None, "wall_time_s": None, "initial_bbox_mAP": None,
            "best_searched_bbox_mAP": None}
    assert read_search_cost("bbox_mAP", path) == none
    path.write_text(json.dumps({"num_trials": 6, "trial_epochs": "many", "wall_time_s": 12.5, "initial_bbox_mAP": 0.3,
                                "best_searched_bbox_mAP": 0.25, "initial_segm_mAP": 0.2}), encoding="utf-8")
    assert read_search_cost("bbox_mAP", path) == {**none, "num_trials": 6.0, "wall_time_s": 12.5,
                                                  "initial_bbox_mAP": 0.3, "best_searched_bbox_mAP": 0.25}
