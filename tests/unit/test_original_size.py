"""Predictions mapped back to the image file's size, and a model whose heads follow the categories."""

from __future__ import annotations

from pathlib import Path

import torch

from pedtune.config.schema import DataConfig, ModelConfig, SyntheticConfig
from pedtune.data.dataset import SampleSet
from pedtune.data.fetch import fetch_dataset
from pedtune.engine.original_size import detect
from pedtune.engine.train import fit
from pedtune.model.factory import build_model

LIGHT = "maskrcnn_mobilenet_v3_large_fpn"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=LIGHT, weights="none", min_size=48, max_size=64)).eval()
    model.roi_heads.score_thresh = 0.0  # random weights: keep every detection so there is something to compare
    return model


@torch.inference_mode()
def test_at_the_input_size_detect_is_the_models_own_forward():
    model = _model()
    images = [torch.rand(3, 48, 64), torch.rand(3, 48, 64)]
    own, ours = model(images), detect(model, images, [(48, 64), (48, 64)])
    assert len(own[0]["boxes"]) > 0
    for a, b in zip(own, ours):
        for key in ("boxes", "scores", "labels", "masks"):
            assert torch.equal(a[key], b[key]), key


@torch.inference_mode()
def test_boxes_are_scaled_and_masks_pasted_at_the_original_size():
    model = _model()
    image = torch.rand(3, 48, 64)
    own, = model([image])
    doubled, = detect(model, [image], [(96, 128)])
    assert torch.allclose(doubled["boxes"], own["boxes"] * 2)
    assert doubled["masks"].shape[-2:] == (96, 128)
    assert torch.equal(doubled["scores"], own["scores"])


def test_the_heads_follow_the_categories_and_multi_class_data_trains(tmp_path: Path, tiny_config):
    syn = SyntheticConfig(num_images=8, height=48, width=64, max_instances=2, categories=3)
    fetch_dataset(DataConfig(format="coco", source="synthetic", synthetic=syn), tmp_path / "dataset")
    keys = [f"shapes{n:05d}" for n in range(1, 9)]
    train, val = (SampleSet(tmp_path / "dataset", part, 48, 64) for part in (keys[:6], keys[6:]))
    config = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"epochs": 1})})
    result = fit(config, train, val)
    assert result.model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 categories + background
    assert result.model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert 0.0 <= result.final["bbox_mAP"] <= 1.0
