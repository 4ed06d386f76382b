"""How DVC's metrics table shows a metrics file: one column per leaf of the JSON object."""

from __future__ import annotations

from typing import Any


def columns(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(columns(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def numbers_only(values: dict[str, Any]) -> bool:
    """Every value a number or null: DVC diffs numbers, and a string column is noise."""
    return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values.values())
