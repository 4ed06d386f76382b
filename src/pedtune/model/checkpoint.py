"""A trained model as a file: its weights with what it takes to rebuild and use them.

The train stage keeps the initial configuration's model in this format, the evaluate stage
the tuned one's; ``pedtune predict`` reads either. The categories travel with the weights:
the heads' labels 1..K, each category's name and its id in the dataset it was trained on,
so predictions come back in that dataset's ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import MaskRCNN

from pedtune.config.schema import ModelConfig, TrainConfig
from pedtune.errors import WeightsError
from pedtune.io import atomic_path
from pedtune.model.factory import build_model


@dataclass(frozen=True)
class Checkpoint:
    model_config: ModelConfig
    train_config: TrainConfig
    categories: dict[int, str]  # label (1..K) -> name: what each of the heads' classes detects
    category_ids: dict[int, int]  # label (1..K) -> the category's id in the dataset it was trained on
    state_dict: dict[str, torch.Tensor]
    kept: dict[str, Any]  # which run the weights come from and why (empty for the train stage's model)

    def model(self) -> MaskRCNN:
        """The model, in eval mode, on the CPU."""
        model = build_model(self.model_config, num_classes=len(self.categories) + 1)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_model(
    state_dict: Mapping[str, torch.Tensor], model_config: ModelConfig, train_config: TrainConfig,
    categories: Mapping[int, str], category_ids: Mapping[int, int], path: Path,
    kept: Mapping[str, Any] | None = None,
) -> None:
    payload = {
        "model_config": model_config.model_dump(),
        "categories": dict(categories),
        "category_ids": dict(category_ids),
        "train_config": train_config.model_dump(),
        "state_dict": dict(state_dict),
        "kept": dict(kept or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> Checkpoint:
    """The model file at ``path``; one without category ids (older) has its labels for ids."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: model file not found") from None
    except Exception as error:  # torch's unpickler raises many kinds on a damaged or foreign file
        raise WeightsError(f"{path}: not a model file pedtune wrote ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or not {"model_config", "categories", "state_dict"} <= set(payload):
        raise WeightsError(f"{path}: not a model file pedtune wrote (it lacks model_config, categories or state_dict)")
    categories = {int(label): str(name) for label, name in payload["categories"].items()}
    return Checkpoint(
        model_config=ModelConfig(**payload["model_config"]),
        train_config=TrainConfig(**payload["train_config"]),
        categories=categories,
        category_ids={int(k): int(v) for k, v in payload.get("category_ids", {l: l for l in categories}).items()},
        state_dict=payload["state_dict"],
        kept=dict(payload.get("kept", {})),
    )
