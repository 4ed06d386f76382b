"""The evaluate stage's registration on docs/cluster.md's tracking server (MLflow's basic-auth, artifacts served
by the server into S3 on moto): the champion rule, and ``pedtune predict``'s loading of the champion, through a
real ``mlflow server`` process with a user's credentials. The local store's case is tests/predict/test_registry.py."""

from __future__ import annotations


import pytest
import torch
from loopback import TrackingServer
from mlflow.tracking import MlflowClient

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from pedtune.config import StudyConfig
from pedtune.errors import TrackingError, WeightsError
from pedtune.predict.source import load_predictor
from pedtune.tracking.registry import CHAMPION, Candidate, model_metadata, register_model
from pedtune.tracking.store import open_store, tracked_run

# The session's server is shared with the sweep test (whose experiment is "pedtune"): a name of this test's own.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loopback-cluster")]
NAME = "registry-on-server"


def small_maskrcnn() -> MaskRCNN:
    """A torchvision Mask R-CNN of a few thousand weights: each version uploads its model through the server, and
    the light architecture's 87 MB, four times, would cost minutes of CI for nothing the rule depends on."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=8, padding=1), nn.ReLU())
    backbone.out_channels = 8
    return MaskRCNN(backbone, num_classes=None, min_size=48, max_size=64,
                    rpn_anchor_generator=AnchorGenerator(((16,),), ((1.0,),)), rpn_head=RPNHead(8, 1),
                    box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(8 * 7 * 7, 16),
                    box_predictor=FastRCNNPredictor(16, 2), mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
                    mask_head=MaskRCNNHeads(8, [8], 1), mask_predictor=MaskRCNNPredictor(8, 8, 2)).eval()


def test_the_champion_rule_and_predict_s_loading_on_the_authenticated_server(
    tracking_server: TrackingServer, credentials: dict[str, str], tiny_config: StudyConfig,
    monkeypatch: pytest.MonkeyPatch,
):
    mlflow = tiny_config.mlflow.model_copy(update={"tracking_uri": tracking_server.url, "artifact_location": "",
                                                   "experiment": NAME, "registered_model": NAME})
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(TrackingError):  # no credentials: refused (401), before anything is logged
        open_store(mlflow)
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    store = open_store(mlflow)
    model = small_maskrcnn()
    metadata = model_metadata({1: "person"}, {1: 7}, 48, 64, 0.5)

    def register(candidate: Candidate):
        with tracked_run(store, "evaluate") as run_id:
            return register_model(store, run_id, NAME, model, candidate, metadata, {"git_commit": "abc"})

    first = register(Candidate("d", "s", 0.50, 0.05))
    better = register(Candidate("d", "s", 0.60, 0.05))  # beats the champion by more than its interval's half-width
    worse = register(Candidate("d", "s", 0.45, 0.05))
    elsewhere = register(Candidate("d", "another split", 0.95, 0.01))

    assert [(r.version, r.champion) for r in (first, better, worse, elsewhere)] == [
        ("1", True), ("2", True), ("3", False), ("4", False)]
    client = MlflowClient(tracking_server.url)
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "2"
    assert "is not more than" in client.get_model_version(NAME, "3").tags["champion_decision"]
    tags = client.get_model_version(NAME, "4").tags
    assert "another dataset or split" in tags["champion_decision"] and tags["split_hash"] == "another split"
    assert int(tags["artifact_size_bytes"]) == elsewhere.size_bytes > 0

    predictor = load_predictor(f"models:/{NAME}@{CHAMPION}", tracking_server.url)
    assert predictor.dataset_categories() == {7: "person"} and predictor.score_threshold == 0.5
    state = predictor.model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_an_unknown_alias_on_the_server_is_a_clear_error(tracking_server: TrackingServer, signed_in: None):
    with pytest.raises(WeightsError, match=f"models:/{NAME}-absent@{CHAMPION}: cannot load"):
        load_predictor(f"models:/{NAME}-absent@{CHAMPION}", tracking_server.url)
