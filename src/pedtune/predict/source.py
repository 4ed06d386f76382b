"""Where ``pedtune predict`` gets its model: a model file pedtune wrote, or an MLflow model URI.

A registered model (``models:/name@alias``, ``models:/name/3``, ``runs:/id/model``) is a plain
torchvision Mask R-CNN; its categories and score threshold come from the model's metadata
(:func:`pedtune.tracking.registry.model_metadata`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pedtune.errors import WeightsError
from pedtune.model.checkpoint import read_checkpoint

MLFLOW_SCHEMES = ("models:/", "runs:/")


@dataclass(frozen=True)
class Predictor:
    model: nn.Module  # a torchvision MaskRCNN, in eval mode, on the CPU
    categories: dict[int, str]  # label (1..K) -> name
    category_ids: dict[int, int]  # label (1..K) -> the dataset's category id
    score_threshold: float | None  # the model's own, for the overlays (None: the caller's default)
    source: str

    def dataset_categories(self) -> dict[int, str]:
        """category id -> name, as the dataset the model learnt from lists them."""
        return {self.category_ids[label]: name for label, name in self.categories.items()}


def load_predictor(reference: str, tracking_uri: str | None = None) -> Predictor:
    """The model ``reference`` names: an MLflow URI (read from ``tracking_uri``'s store) or a model file."""
    if reference.startswith(MLFLOW_SCHEMES):
        return _from_mlflow(reference, tracking_uri)
    checkpoint = read_checkpoint(Path(reference))
    return Predictor(checkpoint.model(), checkpoint.categories, checkpoint.category_ids, None, reference)


def _download(uri: str, tracking_uri: str | None, folder: str) -> tuple[str, str]:
    """The MLflow model at ``uri`` copied into ``folder``, looked up in ``tracking_uri``'s store only
    (MLflow's own resolution of ``models:/`` would consult the process's default store), and what ``uri``
    resolved to (an alias's version: ``models:/NAME@champion`` is ``models:/NAME/3``)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].partition("/")
        return download_artifacts(run_id=run_id, artifact_path=path, dst_path=folder, tracking_uri=tracking_uri), uri
    reference = uri[len("models:/"):]
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, _, number = reference.rpartition("/")
        version = client.get_model_version(name, number)
    source = client.get_model_version_download_uri(version.name, str(version.version))
    local = download_artifacts(artifact_uri=source, dst_path=folder, tracking_uri=tracking_uri)
    return local, f"models:/{version.name}/{version.version}"


def _from_mlflow(uri: str, tracking_uri: str | None) -> Predictor:
    import mlflow.pytorch  # only this path needs MLflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="pedtune-model-") as folder:
        try:
            local, resolved = _download(uri, tracking_uri, folder)
            metadata = Model.load(local).metadata or {}
            model = mlflow.pytorch.load_model(local, map_location="cpu")
        except (MlflowException, OSError) as error:
            message = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise WeightsError(f"{uri}: cannot load this MLflow model from {tracking_uri}: {message}") from None
    if "categories" not in metadata:
        raise WeightsError(f"{uri}: not a model pedtune registered (its metadata lacks the categories)")
    entries = metadata["categories"]
    return Predictor(model.eval(), {int(c["label"]): str(c["name"]) for c in entries},
                     {int(c["label"]): int(c["id"]) for c in entries}, metadata.get("score_threshold"),
                     uri if resolved == uri else f"{uri} ({resolved})")
