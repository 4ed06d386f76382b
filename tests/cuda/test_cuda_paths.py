"""The branches the code takes on a GPU and nowhere else; skipped without CUDA (CI has none).

A lent GPU machine runs these first (``bench/gpu_check.sh``): AMP's autocast and gradient
scaler, the training state written from another thread while the epoch is evaluated on the
device, resuming from a checkpoint read to the CPU, masks thresholded and transposed on the
device before the copy, and the host-box mask paste on device tensors.
"""

from __future__ import annotations

import copy
import math
import threading

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from pedtune.config import StudyConfig
from pedtune.config.schema import ModelConfig
from pedtune.engine import train as engine
from pedtune.engine.coco_eval import to_coco_results
from pedtune.model import factory
from pedtune.model.factory import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")
LIGHT = "maskrcnn_mobilenet_v3_large_fpn"


@pytest.fixture
def gpu_config(tiny_config: StudyConfig) -> StudyConfig:
    return tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"device": "auto"})})


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_fit_trains_on_the_gpu_writes_its_state_meanwhile_and_resumes(gpu_config, synthetic_store, tmp_path, amp):
    store = synthetic_store
    config = gpu_config.model_copy(update={"train": gpu_config.train.model_copy(update={"amp": amp})})
    writers: dict[int, threading.Thread] = {}
    ends: list[tuple[int, dict]] = []

    def write_while_evaluated(epoch, training_state):
        # What the trial's EpochReporter does: torch.save of the live CUDA tensors in a thread.
        state = training_state()
        assert all(t.is_cuda for t in state["model"].values())
        writers[epoch] = threading.Thread(target=torch.save, args=(state, tmp_path / f"epoch-{epoch}.pt"))
        writers[epoch].start()

    def epoch_end(result, state):
        writers[result.epoch].join()
        ends.append((result.epoch, copy.deepcopy(state())))

    straight = engine.fit(config, store, store, on_epoch_trained=write_while_evaluated, on_epoch_end=epoch_end)
    assert next(straight.model.parameters()).device.type == "cuda"  # device: auto found the GPU
    assert len(straight.history) == 2
    assert all(math.isfinite(row["train_loss"]) and 0.0 <= row["bbox_mAP"] <= 1.0 for row in straight.history)
    for epoch, at_end in ends:
        written = torch.load(tmp_path / f"epoch-{epoch}.pt", map_location="cpu", weights_only=True)
        # The evaluation on the device changed nothing the thread was writing.
        torch.testing.assert_close(written["model"], {k: v.cpu() for k, v in at_end["model"].items()}, rtol=0, atol=0)
        assert bool(written["scaler"]) == amp  # a disabled GradScaler has no state

    # Resume as a restored trial does: the state read to the CPU, training continuing on the GPU.
    first = torch.load(tmp_path / "epoch-1.pt", map_location="cpu", weights_only=True)
    resumed = engine.fit(config, store, store, resume={**first, "history": ends[0][1]["history"][:1]})
    assert len(resumed.history) == 2
    # Not bitwise: RoI align's backward on CUDA adds with atomics, in no fixed order.
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-2)


class _DeviceFlatMaskDetector(torch.nn.Module):
    """Two detections per image with masks on the image's device: probability 0.3 and 0.7,
    and a left half / right half pattern so that a wrong layout changes the encoded masks."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            height, width = image.shape[1:]
            left = torch.zeros((1, height, width), device=image.device)
            left[..., : width // 2] = 0.7
            outputs.append({
                "boxes": torch.tensor([[0.0, 0.0, float(width), float(height)]] * 2, device=image.device),
                "scores": torch.tensor([0.9, 0.8], device=image.device),
                "labels": torch.ones(2, dtype=torch.int64, device=image.device),
                "masks": torch.stack([left, 1.0 - left]),
            })
        return outputs


def test_gpu_masks_reach_the_host_binarised_column_major_and_encode_as_on_the_cpu(synthetic_store):
    store = synthetic_store
    loader = engine._loader(store, 2, 0, 0.0, None)
    model = _DeviceFlatMaskDetector()
    on_gpu = list(engine.iter_predictions(model, loader, CUDA))
    on_cpu = list(engine.iter_predictions(model, loader, torch.device("cpu")))
    assert len(on_gpu) == len(on_cpu) == len(store)
    for (gpu_id, gpu), (cpu_id, cpu) in zip(on_gpu, on_cpu):
        masks = gpu["masks"]
        assert masks.device.type == "cpu" and masks.dtype == torch.bool
        assert all(plane.flags.f_contiguous and not plane.flags.c_contiguous for plane in masks[:, 0].numpy())
        assert torch.equal(masks, cpu["masks"])
        assert to_coco_results(gpu_id, gpu) == to_coco_results(cpu_id, cpu)


def test_host_box_paste_on_the_gpu_matches_torchvisions_own(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # both passes pick the same kernels
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=LIGHT, weights="none", min_size=64, max_size=96)).to(CUDA).eval()
    model.roi_heads.score_thresh = 0.0  # every image gets its full quota of detections to paste
    stock = copy.deepcopy(model)
    t = model.transform
    stock.transform = GeneralizedRCNNTransform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible)
    stock.eval()
    images = [torch.rand(3, 64, 80, device=CUDA), torch.rand(3, 72, 64, device=CUDA)]

    pasted: list[tuple[torch.device, torch.device]] = []

    def recording_paste(masks, boxes, size):
        pasted.append((masks.device, boxes.device))
        return paste_masks_in_image(masks, boxes, size)

    monkeypatch.setattr(factory, "paste_masks_in_image", recording_paste)
    with torch.inference_mode():
        expected, got = stock(images), model(images)
    assert sum(len(p["masks"]) for p in got) > 10
    assert [(m.type, b.type) for m, b in pasted] == [("cuda", "cpu")] * len(images)
    for mine, theirs in zip(got, expected):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert mine[key].device.type == "cuda"
            assert torch.equal(mine[key], theirs[key]), key
