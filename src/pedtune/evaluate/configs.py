"""What the evaluation compares: the params.yaml configuration, the tuned one, and the search's cost."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pedtune import console, paths
from pedtune.config import StudyConfig, with_train_overrides
from pedtune.config.schema import TrainConfig
from pedtune.errors import PedtuneError

log = console.get(__name__)

SEARCH_COST_KEYS = ("num_trials", "trial_epochs", "wall_time_s")
# metrics/tune.json's val scores of the initial configuration and of the searcher's best proposal,
# prefixed by the metric (e.g. initial_bbox_mAP): how close the search came when the initial won.
SEARCH_SCORE_PREFIXES = ("initial_", "best_searched_")
PER_RUN_KEYS = ("seed", "device")  # set per run or per machine, never tuned: not compared


class TuneResultsError(PedtuneError):
    """The tune stage's best configuration is missing or unreadable."""


def read_best_params(path: Path = paths.BEST_PARAMS) -> dict[str, Any]:
    """The tuned ``train:`` section as a mapping of TrainConfig keys (validated later)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TuneResultsError(f"{path} not found: run the tune stage first (dvc repro tune)") from None
    except yaml.YAMLError as error:
        raise TuneResultsError(f"{path} is not valid YAML: {error}") from None
    # A hand-written file may hold the section as pasted from params.yaml, under `train:`.
    if isinstance(raw, dict) and set(raw) == {"train"}:
        raw = raw["train"]
    if not isinstance(raw, dict) or not raw:
        raise TuneResultsError(f"{path} must hold a mapping of train.* parameters (the tuned train: section)")
    return raw


def tuned_config(config: StudyConfig, best_params: Mapping[str, Any]) -> StudyConfig:
    """``config`` with the tuned train section; raises ConfigError naming any invalid key."""
    overrides = {f"train.{key}": value for key, value in best_params.items()}
    # The device belongs to the machine running the evaluation, not to the tuned result.
    overrides["train.device"] = config.train.device
    return with_train_overrides(config, overrides)


def unsearched_differences(config: StudyConfig, tuned: StudyConfig) -> list[str]:
    """The train keys the search does not set on which ``tuned`` still differs from ``config``.

    The tune stage copies every other key from params.yaml, so these arise when params.yaml
    changed after the sweep (a stage run outside ``dvc repro``) or from a hand-written file:
    the comparison then measures those changes too.
    """
    searched = {dist.train_key for dist in config.tune.search_space}
    return [
        f"train.{key} {getattr(config.train, key)!r} (params.yaml) vs {getattr(tuned.train, key)!r} (tuned)"
        for key in TrainConfig.model_fields
        if key not in searched and key not in PER_RUN_KEYS and getattr(config.train, key) != getattr(tuned.train, key)
    ]


def run_config(config: StudyConfig, seed: int, epochs: int | None) -> StudyConfig:
    """One evaluation run: ``config`` with its seed and, when given, ``evaluate.epochs``."""
    overrides: dict[str, Any] = {"train.seed": seed}
    if epochs is not None:
        overrides["train.epochs"] = epochs
    return with_train_overrides(config, overrides)


def read_search_cost(metric: str, path: Path = paths.TUNE_METRICS) -> dict[str, float | None]:
    """num_trials, trial_epochs and wall_time_s of the sweep, and the val ``metric`` of the initial
    configuration and of the searcher's best proposal; ``None`` for anything not recorded."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as error:
        log.warning(f"search cost unknown ({path}: {error})")
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    keys = [*SEARCH_COST_KEYS, *(f"{prefix}{metric}" for prefix in SEARCH_SCORE_PREFIXES)]
    return {key: _finite_number(raw.get(key)) for key in keys}


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
