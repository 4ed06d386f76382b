"""docs/params.md is generated from the schema, describes every key, and is current."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pedtune.cli import main
from pedtune.config.reference import reference, type_text
from pedtune.config.schema import Distribution, ResourcesConfig, StudyConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]


def _leaf_keys(tree: dict, prefix: str = "", model: type[BaseModel] = StudyConfig) -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        section = model.model_fields[key].annotation
        # A mapping's own keys are data (record.levels: {train.lr: 4}), not schema keys.
        if isinstance(value, dict) and isinstance(section, type) and issubclass(section, BaseModel):
            keys += _leaf_keys(value, f"{prefix}{key}.", section)
    return keys


def _field(dotted: str):
    model: type[BaseModel] = StudyConfig
    *parents, leaf = dotted.split(".")
    for part in parents:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model.model_fields[leaf]


@pytest.mark.parametrize("params", ["params.yaml", "profiles/cpu-quick.yaml", "profiles/smoke.yaml"])
def test_every_params_key_has_a_description(params: str):
    keys = _leaf_keys(yaml.safe_load((REPO / params).read_text()))
    assert keys
    undescribed = [key for key in keys if not (_field(key).description or "").strip()]
    assert undescribed == []
    assert all((field.description or "").strip() for field in Distribution.model_fields.values())


def test_docs_params_md_is_current():
    # After changing a Field(description=...) or a default: pedtune params-reference
    assert (REPO / "docs" / "params.md").read_text(encoding="utf-8") == reference(), \
        "docs/params.md is stale: run `pedtune params-reference`"


def test_reference_lists_each_key_with_type_default_and_description():
    text = reference()
    for key in _leaf_keys(yaml.safe_load((REPO / "params.yaml").read_text())):
        assert f"| `{key}` |" in text or f"## `{key}`" in text, key
    assert "| `train.optimizer` | \"sgd\" \\| \"adamw\" | `sgd` | `sgd` or `adamw`. |" in text
    assert "| `tune.search_space[].q` |" in text


def test_types_read_as_a_reader_writes_them():
    assert type_text(TrainConfig.model_fields["lr"].annotation, TrainConfig.model_fields["lr"].metadata) == \
        "float > 0.0, ≤ 10.0"
    assert type_text(ResourcesConfig.model_fields["gpu"].annotation, ResourcesConfig.model_fields["gpu"].metadata) == \
        "float ≥ 0"
    assert type_text(TrainConfig.model_fields["seed"].annotation, TrainConfig.model_fields["seed"].metadata) == \
        "int ≥ 0, < 2^32"


def test_cli_writes_the_reference(tmp_path: Path):
    out = tmp_path / "docs" / "params.md"
    assert main(["params-reference", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == reference()
