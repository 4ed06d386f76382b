"""A kept model of the light architecture on the synthetic images, and params.yaml for ``pedtune predict``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pedtune.config import StudyConfig
from pedtune.model.checkpoint import save_model
from pedtune.model.factory import build_model

@pytest.fixture
def dataset_id() -> int:
    """The dataset's id of the model's one category: predictions must carry it, not the head's label 1."""
    return 7


@pytest.fixture
def model_file(tmp_path: Path, tiny_config: StudyConfig, dataset_id: int) -> Path:
    """An untrained light model whose box head favours the one category, so every image gets detections."""
    torch.manual_seed(0)
    model = build_model(tiny_config.model, num_classes=2)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 6.0]))
    path = tmp_path / "models" / "tuned.pt"
    save_model(model.state_dict(), tiny_config.model, tiny_config.train, {1: "person"}, {1: dataset_id}, path,
               {"config": "tuned", "seed": 1, "note": "test"})
    return path


@pytest.fixture
def params_file(tmp_path: Path, tiny_config: StudyConfig) -> Path:
    raw = tiny_config.model_dump(mode="json")
    raw["mlflow"].update(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                         artifact_location=str(tmp_path / "mlruns" / "artifacts"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path
