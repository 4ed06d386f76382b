"""Read ``params.yaml`` into a validated :class:`StudyConfig`: the only place that parses config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pedtune.config.schema import StudyConfig, TrainConfig
from pedtune.errors import PedtuneError


class ConfigError(PedtuneError, ValueError):
    """params.yaml is missing, unparsable or holds an invalid value; the message names the key."""


# Keys an older params.yaml may still hold, and what took their place.
RENAMED_KEYS = {
    "train.warmup_iters": "train.warmup_epochs (the warm-up is counted in epochs, the same share "
                          "of training at every batch size)",
}


def _describe(error: ValidationError, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        key = prefix + ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key, replaced by {RENAMED_KEYS[key]}" if key in RENAMED_KEYS else "unknown key"
        elif item["type"] == "missing":
            message = "missing (required)"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def validate(raw: Mapping[str, Any], source: str = "params.yaml") -> StudyConfig:
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"invalid {source}:\n{_describe(error)}") from None


def load_config(path: str | Path = "params.yaml") -> StudyConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (run from the repository root or pass --params)") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:  # a folder, no permission, ...
        raise ConfigError(f"{path} cannot be read: {error.strerror or error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, model, train, mlflow, ...)")
    return validate(raw, source=str(path))


def with_train_overrides(config: StudyConfig, overrides: Mapping[str, Any]) -> StudyConfig:
    """Return ``config`` with ``train.*`` keys replaced (e.g. a tuning trial's sample), re-validated."""
    train = config.train.model_dump()
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section != "train" or key not in TrainConfig.model_fields:
            renamed = f" (replaced by {RENAMED_KEYS[dotted]})" if dotted in RENAMED_KEYS else ""
            raise ConfigError(f"override '{dotted}' is not a train.* parameter{renamed}")
        train[key] = value
    try:
        validated = TrainConfig.model_validate(train)
    except ValidationError as error:
        # Prefix the locations so the message names e.g. "train.batch_size".
        raise ConfigError(f"invalid train overrides:\n{_describe(error, prefix='train.')}") from None
    # Only the train section is re-checked: the study-level checks relate tune settings to the
    # train: section as written, not to the variations a trial or an evaluation run trains.
    return config.model_copy(update={"train": validated})


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}} -> {"train.lr": 0.1}``; lists of mappings are indexed."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{index}."))
        else:
            flat[name] = value
    return flat


def run_params(config: StudyConfig) -> dict[str, Any]:
    """What defines a training run, flattened (``train.lr``, ``model.arch``, ...): the params every run logs.

    ``train.threads`` is the count the run trains with (null in params.yaml: derived from the CPUs per run).
    """
    train = {**config.train.model_dump(), "threads": config.torch_threads}
    return flatten(
        {"data": {"split": config.data.split.model_dump()}, "model": config.model.model_dump(), "train": train}
    )
