"""``pedtune profile NAME``: a profile in ``profiles/`` as the ``-S`` options of one DVC experiment.

A profile is a whole params file (``profiles/NAME.yaml``, validated like params.yaml). Printed
as the keys where it differs from params.yaml, it becomes a named experiment that DVC tracks
as params and shows in ``dvc exp show``, while params.yaml's committed defaults stay as they are:

    dvc exp run -n cpu-quick $(pedtune profile cpu-quick)

Each value is written in the override grammar ``dvc exp run -S`` parses (Hydra's), without
spaces, so the shell splits the output into exactly one word per option.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pedtune.config.load import ConfigError, load_config

PROFILES = Path("profiles")
FAILED_OPTION = "--pedtune-profile-failed"  # printed instead of options when the profile cannot be read
# Hydra's unquoted strings: a letter or underscore, then letters, digits, _ . / - (e.g. train.lr).
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_WORDS = {"null", "true", "false", "nan", "inf"}


def available(profiles: Path = PROFILES) -> list[str]:
    return sorted(path.stem for path in profiles.glob("*.yaml"))


def differences(base: Mapping[str, Any], profile: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{dotted key: profile value}`` for every leaf where ``profile`` differs (a list is one leaf)."""
    changed: dict[str, Any] = {}
    for key, value in profile.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            changed |= differences(base[key], value, f"{dotted}.")
        elif key not in base or base[key] != value:
            changed[dotted] = value
    return changed


def override_value(value: Any) -> str:
    """``value`` in the override grammar of ``dvc exp run -S`` (Hydra's), with no spaces."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _WORDS:
            return value
        if " " in value or "'" in value:
            raise ConfigError(f"profile value {value!r}: spaces and quotes cannot pass through the shell as one word")
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    raise ConfigError(f"profile value {json.dumps(value, default=str)}: type {type(value).__name__} has no override form")


def profile_options(name: str, params: str | Path = "params.yaml", profiles: Path = PROFILES) -> list[str]:
    """``["-S", "key=value", ...]``: the options that turn ``params`` into profile ``name``."""
    path = profiles / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(available(profiles)) or "none"
        raise ConfigError(f"no profile '{name}' ({path} not found; profiles: {names})")
    load_config(path)  # a profile is a complete, valid params file
    load_config(params)
    base = yaml.safe_load(Path(params).read_text(encoding="utf-8"))
    profile = yaml.safe_load(path.read_text(encoding="utf-8"))
    options = []
    for key, value in differences(base, profile).items():
        options += ["-S", f"{key}={override_value(value)}"]
    return options
