"""Resolve ``model.weights`` through torchvision's weights API into this project's key space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models._api import WeightsEnum
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)

from pedtune import console
from pedtune.config.schema import ModelConfig
from pedtune.errors import WeightsError
from pedtune.io import atomic_path
from pedtune.model.factory import PREDICTOR_PREFIXES, PREDICTOR_ROWS, build_model

log = console.get(__name__)

# arch -> weights choice -> (torchvision weights, prefix mapping of its keys into ours)
SOURCES: dict[str, dict[str, tuple[WeightsEnum, dict[str, str]]]] = {
    "maskrcnn_resnet50_fpn": {
        "coco": (MaskRCNN_ResNet50_FPN_Weights.COCO_V1, {"": ""}),
        "imagenet_backbone": (ResNet50_Weights.IMAGENET1K_V1, {"": "backbone.body."}),
    },
    "maskrcnn_resnet50_fpn_v2": {
        "coco": (MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1, {"": ""}),
        "imagenet_backbone": (ResNet50_Weights.IMAGENET1K_V1, {"": "backbone.body."}),
    },
    # No Mask R-CNN with this backbone is published: the COCO Faster R-CNN gives the
    # backbone, FPN, RPN and box head; only the mask head starts from scratch.
    "maskrcnn_mobilenet_v3_large_fpn": {
        "coco": (FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1, {"": ""}),
        "imagenet_backbone": (MobileNet_V3_Large_Weights.IMAGENET1K_V1, {"features.": "backbone.body."}),
    },
}


def remap(state: dict[str, torch.Tensor], mapping: dict[str, str], model_keys: set[str],
          predictors: bool = False) -> dict[str, torch.Tensor]:
    """Rename keys by prefix; keep only those the model has (drops fc, classifier), and of the
    class-specific predictors (sized for the source's classes) only the predictors, when asked."""
    result = {}
    for key, tensor in state.items():
        for old, new in mapping.items():
            if key.startswith(old):
                renamed = new + key[len(old) :]
                if renamed in model_keys and renamed.startswith(PREDICTOR_PREFIXES) == predictors:
                    result[renamed] = tensor
                break
    return result


def with_predictor_rows(state: Mapping[str, torch.Tensor], predictors: Mapping[str, torch.Tensor],
                        pretrained_categories: Sequence[str], categories: Mapping[int, str],
                        source: str = "the pretrained weights") -> dict[str, torch.Tensor]:
    """``state`` plus what the dataset's predictors start from: a category whose name is one of the
    pretrained classes (``pretrained_categories``, row 0 the background) takes that class's rows of
    ``predictors``, the background the background's; the others start fresh. Unchanged when no name
    matches (then nothing of the pretrained predictors is used)."""
    index = {name.strip().lower(): row for row, name in enumerate(pretrained_categories)
             if row > 0 and name != "N/A"}
    rows = [index.get(categories[label].strip().lower(), -1) for label in sorted(categories)]
    matched = [categories[label] for label, row in zip(sorted(categories), rows) if row >= 0]
    fresh = [categories[label] for label, row in zip(sorted(categories), rows) if row < 0]
    if not predictors or not matched:
        if predictors:
            log.info(f"predictors start fresh: no category is one of the classes of {source}")
        return dict(state)
    log.info(f"predictors of {', '.join(matched)} and the background start from the rows of {source}"
             + (f"; fresh: {', '.join(fresh)}" if fresh else ""))
    if not any(key.startswith(PREDICTOR_PREFIXES[1]) for key in predictors):
        log.info(f"the mask predictor starts fresh for every category: {source} has no mask head")
    return {**state, **predictors, PREDICTOR_ROWS: torch.tensor([0, *rows], dtype=torch.int64)}


def resolve_weights(cfg: ModelConfig) -> dict[str, Any]:
    """The payload the weights stage saves: which weights, and the tensors (empty for ``none``)."""
    if cfg.weights == "none":
        return {"arch": cfg.arch, "weights": "none", "source": "", "state_dict": {}}
    enum, mapping = SOURCES[cfg.arch][cfg.weights]
    log.info(f"fetching {enum} from {enum.url}")
    try:
        # torch's download bar only on a terminal: in a log its carriage returns pile up.
        bar = console.is_terminal() and not console.quiet()
        state = enum.get_state_dict(progress=bar, check_hash=True)
    except Exception as error:  # urllib, hash and unpickling errors all mean: not usable
        raise WeightsError(
            f"could not fetch {enum} ({error}). Without internet, set model.weights: none, "
            "or place the file in torch's hub cache ($TORCH_HOME/hub/checkpoints)."
        ) from None
    model_keys = set(build_model(cfg.model_copy(update={"weights": "none"})).state_dict())
    converted = remap(state, mapping, model_keys)
    if not converted:
        raise WeightsError(f"{enum} shares no tensors with {cfg.arch}")
    build_model(cfg, converted)  # fails loudly now rather than at training time
    # A detector's predictors, sized for its classes: the rows of the dataset's categories that
    # are among them are picked when the dataset is known (load_weights).
    predictors = remap(state, mapping, model_keys, predictors=True)
    categories = list(enum.meta.get("categories", [])) if predictors else []
    return {"arch": cfg.arch, "weights": cfg.weights, "source": str(enum), "state_dict": converted,
            "predictors": predictors if categories else {}, "categories": categories}


def save_weights(cfg: ModelConfig, path: Path) -> dict[str, Any]:
    payload = resolve_weights(cfg)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return payload


def load_weights(path: Path, cfg: ModelConfig, categories: Mapping[int, str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors to start from; checks the file was made for this arch and weights choice. With the
    dataset's ``categories``, the pretrained predictors' rows of those among its classes too."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path} not found: run the weights stage first (dvc repro weights)") from None
    except Exception as error:
        raise WeightsError(f"{path} is not a readable weights file: {error}") from None
    if (payload.get("arch"), payload.get("weights")) != (cfg.arch, cfg.weights):
        raise WeightsError(
            f"{path} holds {payload.get('arch')}/{payload.get('weights')} but params.yaml asks for "
            f"{cfg.arch}/{cfg.weights}: run the weights stage again"
        )
    if categories is None or not payload.get("predictors"):
        return payload["state_dict"]
    return with_predictor_rows(payload["state_dict"], payload["predictors"], payload["categories"], categories,
                               payload.get("source") or cfg.weights)
