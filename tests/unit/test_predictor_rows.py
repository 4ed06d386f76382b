"""Predictor rows of the dataset's categories that a pretrained detector knows by name start from its rows."""

from __future__ import annotations

import pytest
import torch

from pedtune.config.schema import ModelConfig
from pedtune.model.factory import PREDICTOR_PREFIXES, PREDICTOR_ROWS, build_model
from pedtune.model.weights import load_weights, remap, with_predictor_rows

CFG = ModelConfig(arch="maskrcnn_mobilenet_v3_large_fpn", weights="coco", min_size=64, max_size=96,
                  trainable_backbone_layers=2)
# A stand-in for torchvision's COCO meta["categories"]: background first, "N/A" for unused ids.
PRETRAINED_CATEGORIES = ["__background__", "person", "N/A", "car"]
CLS, BOX, MASK = ("roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
                  "roi_heads.mask_predictor.mask_fcn_logits")


@pytest.fixture(scope="module")
def detector() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(a 4-class pretrained detector's state, its tensors but the predictors, its predictors)."""
    torch.manual_seed(0)
    source = build_model(CFG.model_copy(update={"weights": "none"}), num_classes=4).state_dict()
    keys = set(build_model(CFG.model_copy(update={"weights": "none"})).state_dict())
    return source, remap(source, {"": ""}, keys), remap(source, {"": ""}, keys, predictors=True)


def _built(state: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)  # the same fresh rows for every build
    return build_model(CFG, state, num_classes=num_classes).state_dict()


def test_matched_categories_and_the_background_start_from_the_pretrained_rows(detector):
    source, base, predictors = detector
    assert predictors and all(key.startswith(PREDICTOR_PREFIXES) for key in predictors)
    state = with_predictor_rows(base, predictors, PRETRAINED_CATEGORIES, {1: "Car", 2: "bicycle"})
    assert state[PREDICTOR_ROWS].tolist() == [0, 3, -1]
    model, fresh = _built(state, 3), _built(base, 3)
    for layer in (CLS, MASK):
        for part in ("weight", "bias"):
            key = f"{layer}.{part}"
            assert torch.equal(model[key][0], source[key][0])  # background
            assert torch.equal(model[key][1], source[key][3])  # "Car" is the detector's "car"
            assert torch.equal(model[key][2], fresh[key][2])  # "bicycle": fresh, as without pretrained rows
            assert not torch.equal(model[key][2], source[key][2])
    for part in ("weight", "bias"):  # four box coordinates per class
        key = f"{BOX}.{part}"
        assert torch.equal(model[key][4:8], source[key][12:16]) and torch.equal(model[key][8:12], fresh[key][8:12])
    # everything else is the pretrained state, as without the rows
    assert all(torch.equal(model[key], fresh[key]) for key in base if key in model)


def test_a_detector_without_a_mask_head_gives_the_box_rows_only(detector):
    source, base, predictors = detector
    boxes_only = {k: v for k, v in predictors.items() if not k.startswith(MASK)}  # as the MobileNet Faster R-CNN
    model = _built(with_predictor_rows(base, boxes_only, PRETRAINED_CATEGORIES, {1: "person"}), 2)
    fresh = _built(base, 2)
    assert torch.equal(model[f"{CLS}.weight"][1], source[f"{CLS}.weight"][1])
    assert torch.equal(model[f"{MASK}.weight"], fresh[f"{MASK}.weight"])


def test_no_matching_name_leaves_the_predictors_fresh(detector):
    _, base, predictors = detector
    state = with_predictor_rows(base, predictors, PRETRAINED_CATEGORIES, {1: "square", 2: "N/A"})
    assert state.keys() == base.keys()


def test_the_weights_file_carries_the_predictors_to_the_dataset(detector, tmp_path):
    _, base, predictors = detector
    torch.save({"arch": CFG.arch, "weights": "coco", "source": "stand-in", "state_dict": base,
                "predictors": predictors, "categories": PRETRAINED_CATEGORIES}, tmp_path / "w.pt")
    assert load_weights(tmp_path / "w.pt", CFG).keys() == base.keys()  # no dataset named: as before
    state = load_weights(tmp_path / "w.pt", CFG, {1: "person"})
    assert state[PREDICTOR_ROWS].tolist() == [0, 1]
    assert _built(state, 2)[f"{CLS}.bias"][1] == predictors[f"{CLS}.bias"][1]
