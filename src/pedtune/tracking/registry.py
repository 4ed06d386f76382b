"""The kept model as a registered MLflow model, and the rule that moves its ``champion`` alias.

The model is logged as a plain torchvision Mask R-CNN (:func:`plain_torchvision`), so
``mlflow.pytorch.load_model("models:/NAME@champion")`` works where pedtune is not installed.
It is saved locally and logged through the explicit client (no process-wide active run), then
registered as a new version of ``mlflow.registered_model``.

``champion`` moves to the new version only when the current champion was scored on the same
dataset and split (their hashes) and the new version's test bbox mAP beats it by more than the
half-width of the new study's 95 % interval of that mean over seeds; a first version becomes
champion. Otherwise the version is registered without the alias, and :class:`Registration`
says why.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from pedtune.errors import TrackingError
from pedtune.tracking.store import Store

CHAMPION = "champion"
EXAMPLE_SIZE = (64, 64)  # the input example's image (height, width): small, as MLflow stores it as JSON
MODEL_ARTIFACT = "model"
TAG_DATASET, TAG_SPLIT, TAG_MAP, TAG_HALF_WIDTH = "dataset_hash", "split_hash", "test_bbox_mAP", "test_bbox_mAP_ci_half_width"


@dataclass(frozen=True)
class Candidate:
    """What decides the alias: the new model's test bbox mAP over seeds and what it was scored on."""

    dataset_hash: str
    split_hash: str
    test_bbox_map: float  # mean over the evaluate seeds
    half_width: float | None  # of its 95 % interval; None with fewer than two scored seeds


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    champion: bool  # whether the alias moved to this version
    reason: str
    size_bytes: int  # the logged model's files

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def champion_uri(name: str) -> str:
    """The MLflow URI of ``name``'s champion: what ``pedtune predict`` uses unless told otherwise."""
    return f"models:/{name}@{CHAMPION}"


def model_metadata(categories: Mapping[int, str], category_ids: Mapping[int, int], min_size: int, max_size: int,
                   score_threshold: float) -> dict[str, Any]:
    """What a registered model carries besides its weights: each label's category (its id in the
    dataset and its name), the input size the model resizes to, the score threshold of its pictures."""
    return {
        "categories": [{"label": label, "id": category_ids[label], "name": name} for label, name in categories.items()],
        "input_size": {"min_size": min_size, "max_size": max_size},
        "score_threshold": score_threshold,
    }


def plain_torchvision(model: MaskRCNN) -> MaskRCNN:
    """A copy of ``model`` on the CPU in eval mode, made only of torch and torchvision classes
    (pedtune's transform, which only pastes masks faster on a GPU, swapped for torchvision's own)."""
    plain = copy.deepcopy(model).cpu().eval()
    transform = plain.transform
    plain.transform = GeneralizedRCNNTransform(
        transform.min_size, transform.max_size, transform.image_mean, transform.image_std, transform.size_divisible,
        transform.fixed_size, _skip_resize=transform._skip_resize,
    )
    foreign = sorted({type(m).__module__ for m in plain.modules()
                      if not type(m).__module__.startswith(("torch.", "torchvision."))})
    if foreign:
        raise TrackingError(f"the model holds classes from {foreign}: it would not load without them")
    return plain


def champion_decision(candidate: Candidate, champion_tags: Mapping[str, str] | None) -> tuple[bool, str]:
    """Whether the alias moves to ``candidate``, and why (or why not)."""
    if champion_tags is None:
        return True, "no champion yet (the first version of this name)"
    if (champion_tags.get(TAG_DATASET), champion_tags.get(TAG_SPLIT)) != (candidate.dataset_hash,
                                                                           candidate.split_hash):
        return False, ("the champion was scored on another dataset or split (dataset/split hash differ): "
                       "the two are not compared")
    if candidate.half_width is None:
        return False, "fewer than two seeds were scored: no interval to compare the champion with"
    margin = candidate.test_bbox_map - float(champion_tags[TAG_MAP])
    if margin > candidate.half_width:
        return True, (f"test bbox mAP {candidate.test_bbox_map:.4f} beats the champion's {champion_tags[TAG_MAP]} "
                      f"by {margin:+.4f}, more than the 95 % interval's half-width {candidate.half_width:.4f}")
    return False, (f"test bbox mAP {candidate.test_bbox_map:.4f} vs the champion's {float(champion_tags[TAG_MAP]):.4f} "
                   f"({margin:+.4f}) is not more than the 95 % interval's half-width {candidate.half_width:.4f}")


def _champion_tags(store: Store, name: str) -> dict[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        return dict(store.client.get_model_version_by_alias(name, CHAMPION).tags)
    except MlflowException:  # no such model, or no champion yet
        return None


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def register_model(
    store: Store, run_id: str, name: str, model: MaskRCNN, candidate: Candidate, metadata: Mapping[str, object],
    tags: Mapping[str, str],
) -> Registration:
    """Log ``model`` to ``run_id`` as an MLflow model, register it under ``name``, and apply the alias rule.

    ``metadata``: what predict needs besides the weights (categories, input size, score
    threshold); ``tags``: the version's provenance (commit, params ...), besides the candidate's.
    """
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    plain = plain_torchvision(model)
    # A list of variable-size RGB images, each [3, H, W] in 0..1; per image: boxes, labels, scores, masks.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1), "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "boxes"),
                        TensorSpec(np.dtype(np.int64), (-1,), "labels"),
                        TensorSpec(np.dtype(np.float32), (-1,), "scores"),
                        TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1), "masks")]),
    )
    example = np.zeros((1, 3, *EXAMPLE_SIZE), dtype=np.float32)
    version_tags = {**tags, TAG_DATASET: candidate.dataset_hash, TAG_SPLIT: candidate.split_hash,
                    TAG_MAP: f"{candidate.test_bbox_map:.6f}"}
    if candidate.half_width is not None:
        version_tags[TAG_HALF_WIDTH] = f"{candidate.half_width:.6f}"
    try:
        with tempfile.TemporaryDirectory(prefix="pedtune-model-") as folder:
            local = Path(folder) / MODEL_ARTIFACT
            # pickle: torch.export cannot trace the data-dependent resizing of a detection model.
            mlflow.pytorch.save_model(plain, str(local), serialization_format="pickle", signature=signature,
                                      input_example=example,
                                      metadata=dict(metadata), pip_requirements=_requirements())
            size = _size(local)
            store.client.log_artifacts(run_id, str(local), MODEL_ARTIFACT)
        version_tags["artifact_size_bytes"] = str(size)
        champion_tags = _champion_tags(store, name)
        try:
            store.client.get_registered_model(name)
        except MlflowException:
            store.client.create_registered_model(name, description="pedtune's kept Mask R-CNN (pedtune predict)")
        source = f"{store.client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
        version = store.client.create_model_version(name, source, run_id=run_id, tags=version_tags).version
        promote, reason = champion_decision(candidate, champion_tags)
        if promote:
            store.client.set_registered_model_alias(name, CHAMPION, version)
        store.client.set_model_version_tag(name, version, "champion_decision", reason)
    except MlflowException as error:
        raise TrackingError(f"cannot register model {name} in {store.tracking_uri}: {error}") from None
    return Registration(name, str(version), promote, reason, size)


def _requirements() -> list[str]:
    """What loading the model needs (pinned as installed): torch and torchvision, not pedtune."""
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}", f"torchvision=={version('torchvision').split('+')[0]}"]
