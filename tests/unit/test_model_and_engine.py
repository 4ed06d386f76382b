from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models.detection as detection
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from pedtune.config.schema import BACKBONE_STAGES, ModelConfig
from pedtune.data.dataset import SampleSet
from pedtune.engine import train as engine
from pedtune.errors import NonFiniteLossError, WeightsError
from pedtune.model import factory
from pedtune.model.factory import PREDICTOR_PREFIXES, build_model
from pedtune.model.weights import SOURCES, load_weights, remap, save_weights

LIGHT = "maskrcnn_mobilenet_v3_large_fpn"


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", LIGHT])
def test_each_arch_builds_with_two_classes(arch):
    model = build_model(ModelConfig(arch=arch, weights="none", min_size=64, max_size=96))
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2
    assert model.transform.min_size == (64,) and model.transform.max_size == 96


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", LIGHT])
def test_random_weights_train_every_backbone_parameter(arch):
    # trainable_backbone_layers applies to pretrained weights only: nothing random stays frozen.
    model = build_model(ModelConfig(arch=arch, weights="none", min_size=64, max_size=96, trainable_backbone_layers=0))
    assert [n for n, p in model.backbone.named_parameters() if not p.requires_grad] == []


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", LIGHT])
def test_all_stages_trainable_with_pretrained_weights(arch):
    cfg = ModelConfig(arch=arch, weights="coco", min_size=64, max_size=96,
                      trainable_backbone_layers=BACKBONE_STAGES[arch])
    stand_in = {k: v for k, v in build_model(cfg.model_copy(update={"weights": "none"})).state_dict().items()
                if k.startswith("backbone.body.")}
    model = build_model(cfg, stand_in)
    assert [n for n, p in model.backbone.body.named_parameters() if not p.requires_grad] == []


def test_coco_weights_of_the_light_model_load_everything_but_the_new_heads():
    # Stand-in for the download: torchvision's COCO Faster R-CNN, randomly initialised.
    source = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None).state_dict()
    cfg = ModelConfig(arch=LIGHT, weights="coco", min_size=64, max_size=96, trainable_backbone_layers=2)
    keys = set(build_model(cfg.model_copy(update={"weights": "none"})).state_dict())
    converted = remap(source, SOURCES[LIGHT]["coco"][1], keys)
    assert converted and not any(k.startswith(PREDICTOR_PREFIXES) for k in converted)
    model = build_model(cfg, converted)
    name = "backbone.fpn.inner_blocks.0.0.weight"
    assert torch.equal(model.state_dict()[name], source[name])
    frozen = [n for n, p in model.backbone.body.named_parameters() if not p.requires_grad]
    assert frozen, "trainable_backbone_layers=2 must freeze the early layers"


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", LIGHT])
def test_pretrained_backbones_keep_batch_norm_frozen(arch):
    # Batches of 2 images must not move the pretrained running statistics, in any arch.
    cfg = ModelConfig(arch=arch, weights="coco", min_size=64, max_size=96)
    scratch = build_model(cfg.model_copy(update={"weights": "none"}))
    stand_in = {k: v for k, v in scratch.state_dict().items() if k.startswith("backbone.body.")}
    model = build_model(cfg, stand_in)
    norms = [m for m in model.backbone.body.modules() if "BatchNorm" in type(m).__name__]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    name = next(k for k in stand_in if k.endswith("running_var"))
    assert torch.equal(model.state_dict()[name], stand_in[name])  # loaded, not re-initialised
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in scratch.backbone.body.modules())


def test_rpn_test_proposals_bounds_the_proposals_at_inference():
    model = build_model(ModelConfig(arch=LIGHT, weights="none", min_size=64, max_size=96, rpn_test_proposals=7))
    assert model.rpn._pre_nms_top_n == {"training": 2000, "testing": 7}
    assert model.rpn._post_nms_top_n == {"training": 2000, "testing": 7}
    model.eval()
    with torch.no_grad():
        images, _ = model.transform([torch.rand(3, 64, 80)])
        proposals, _ = model.rpn(images, model.backbone(images.tensors))
    assert 0 < len(proposals[0]) <= 7


def test_box_batch_size_per_image_bounds_the_proposals_the_heads_train_on():
    model = build_model(ModelConfig(arch=LIGHT, weights="none", min_size=64, max_size=96, box_batch_size_per_image=8))
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1]),
              "masks": torch.ones(1, 64, 80, dtype=torch.uint8)}
    proposals = [torch.tensor([[10.0, 10.0, 50.0, 60.0]] * 10 + [[0.0, 0.0, 5.0, 5.0]] * 30)]
    sampled, *_ = model.roi_heads.select_training_samples(proposals, [target])
    assert len(sampled[0]) == 8 and model.roi_heads.fg_bg_sampler.positive_fraction == 0.25


def test_masks_are_pasted_with_host_boxes_and_match_torchvisions_own_paste(monkeypatch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=LIGHT, weights="none", min_size=64, max_size=96)).eval()
    model.roi_heads.score_thresh = 0.0  # every image gets its full quota of detections to paste
    stock = copy.deepcopy(model)
    t = model.transform
    stock.transform = GeneralizedRCNNTransform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible)
    stock.eval()
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    with torch.inference_mode():
        expected, got = stock(images), model(images)
    assert sum(len(p["masks"]) for p in got) > 10
    for mine, theirs in zip(got, expected):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(mine[key], theirs[key]), key

    pasted_with: list[torch.device] = []

    def recording_paste(masks, boxes, size):
        pasted_with.append(boxes.device)
        return paste_masks_in_image(masks, boxes, size)

    monkeypatch.setattr(factory, "paste_masks_in_image", recording_paste)
    with torch.inference_mode():
        model(images)
    assert pasted_with == [torch.device("cpu")] * len(images)


def test_weights_file_round_trip_and_mismatch(tmp_path):
    cfg = ModelConfig(arch=LIGHT, weights="none")
    save_weights(cfg, tmp_path / "w.pt")
    assert load_weights(tmp_path / "w.pt", cfg) == {}
    with pytest.raises(WeightsError, match="run the weights stage again"):
        load_weights(tmp_path / "w.pt", cfg.model_copy(update={"arch": "maskrcnn_resnet50_fpn"}))
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.pt", cfg)


def test_fit_reports_every_epoch_and_resumes_exactly(tiny_config, synthetic_store: SampleSet, monkeypatch):
    releases = []
    monkeypatch.setattr(engine, "release_freed_heap", lambda: releases.append(True))
    states, trained, order = [], [], []
    evaluate = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda *args: order.append("evaluate") or evaluate(*args))
    straight = engine.fit(tiny_config, synthetic_store, synthetic_store,
                          on_epoch_end=lambda result, state: order.append("end") or states.append(
                              (result, copy.deepcopy(state()))),
                          on_epoch_trained=lambda epoch, state: order.append("trained") or trained.append(
                              (epoch, copy.deepcopy(state()))))
    assert order == ["trained", "evaluate", "end"] * 2
    assert [result.epoch for result, _ in states] == [1, 2]
    assert [epoch for epoch, _ in trained] == [1, 2]
    # Evaluating an epoch changes none of the state a checkpoint written meanwhile holds.
    for (_, before), (_, after) in zip(trained, states, strict=True):
        assert set(after) - set(before) == {"history"}
        torch.testing.assert_close(before["model"], after["model"], rtol=0, atol=0)
        torch.testing.assert_close(before["optimizer"], after["optimizer"], rtol=0, atol=0)
        assert (before["epoch"], before["scheduler"], before["scaler"]) == (
            after["epoch"], after["scheduler"], after["scaler"])
    assert {"train_loss", "lr", "bbox_mAP", "segm_mAP", "bbox_AP50", "segm_AP75"} <= set(states[0][0].metrics)
    checkpoint = {**states[0][1], "history": list(states[0][1]["history"][:1])}
    resumed = engine.fit(tiny_config, synthetic_store, synthetic_store, resume=checkpoint)
    assert len(resumed.history) == 2
    assert len(releases) == 2  # each fit hands back what the one before it freed
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-4)
    for name, tensor in straight.model.state_dict().items():
        assert torch.allclose(tensor.float(), resumed.model.state_dict()[name].float(), atol=1e-5), name


def test_a_run_resumed_with_loader_workers_trains_the_same_epochs(tiny_config, synthetic_store: SampleSet):
    # Workers draw the flips, and the first epoch of a loader draws their seeds before its order:
    # persistent workers made a resumed epoch see another order and other flips.
    config = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={"num_workers": 2})})
    states = []
    straight = engine.fit(config, synthetic_store, synthetic_store,
                          on_epoch_end=lambda result, state: states.append(copy.deepcopy(state())))
    checkpoint = {**states[0], "history": list(states[0]["history"][:1])}
    resumed = engine.fit(config, synthetic_store, synthetic_store, resume=checkpoint)
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-5)
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_fit_scores_with_the_configured_coco_backend(tiny_config, synthetic_store: SampleSet, monkeypatch):
    backends = []
    index = engine.ground_truth
    monkeypatch.setattr(engine, "ground_truth", lambda store, backend: backends.append(backend) or index(store, backend))
    train = tiny_config.train.model_copy(update={"coco_backend": "faster_coco_eval", "epochs": 1})
    result = engine.fit(tiny_config.model_copy(update={"train": train}), synthetic_store, synthetic_store)
    assert backends == ["faster_coco_eval"] and len(result.history) == 1


def test_non_finite_loss_raises_a_specific_error(tiny_config, synthetic_store, monkeypatch):
    def diverging_model(cfg, pretrained=None, num_classes=2):
        model = build_model(cfg, pretrained, num_classes)
        forward = model.forward

        def nan_losses(images, targets=None):
            out = forward(images, targets)
            return {k: v * float("nan") for k, v in out.items()} if model.training else out

        model.forward = nan_losses
        return model

    monkeypatch.setattr(engine, "build_model", diverging_model)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1, step 1"):
        engine.fit(tiny_config, synthetic_store, synthetic_store)


class _FlatMaskDetector(torch.nn.Module):
    """Two detections per image, mask probability 0.3 and 0.7 everywhere; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        outputs = []
        for image in images:
            height, width = image.shape[1:]
            outputs.append({
                "boxes": torch.tensor([[0.0, 0.0, float(width), float(height)]] * 2),
                "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.ones(2, dtype=torch.int64),
                "masks": torch.stack([torch.full((1, height, width), p) for p in (0.3, 0.7)]),
            })
        return outputs


def test_predictions_come_binarised_and_one_batch_at_a_time(synthetic_store: SampleSet):
    loader = engine._loader(synthetic_store, 2, 0, 0.0, None)
    model = _FlatMaskDetector()
    stream = engine.iter_predictions(model, loader, torch.device("cpu"))
    first = next(stream)
    assert model.calls == 1  # evaluate holds one batch's masks, not the whole split's
    masks = first[1]["masks"]
    assert masks.dtype == torch.bool and not masks[0].any() and masks[1].all()
    ids = [first[0]] + [image_id for image_id, _ in stream]
    assert ids == list(range(len(synthetic_store))) and model.calls == len(loader)
