"""What one image costs each Mask R-CNN, in floating-point operations, without building it.

``pedtune check`` states how long a configuration takes on this machine in a few seconds, which
leaves no time to import torchvision and build a ResNet-50. So the model's cost is counted
ahead of time (:func:`count_costs`, torch's ``FlopCounterMode`` on each arch built on the meta
device) into ``model_costs.json`` beside this module, and :mod:`pedtune.engine.estimate` times
only a small plain-torch probe (:func:`probe_net`, its operations counted in the same file) to
learn this machine's speed. ``pedtune model-costs`` regenerates the file; a test checks it is
current.

An image's cost has a part that grows with its pixels (backbone, FPN and the RPN's head) and
parts that grow with the regions the heads see: the box head sees ``box_batch_size_per_image``
sampled regions in training and ``rpn_test_proposals`` at inference, the mask head the sampled
positives (at most a quarter of the sampled regions, torchvision's ``box_positive_fraction``)
in training and ``detections_per_img`` at inference. The counts are those upper bounds, and
every layer counts as trained (as with random weights; pretrained weights freeze the first
stages), so the cost errs high. Operations torch does not count (batch norm, activations,
RoIAlign, NMS, resizing) are left to the probe's speed, which includes its own.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import torch
from torch import nn

from pedtune.config.schema import Arch, ModelConfig

COSTS_FILE = Path(__file__).with_name("model_costs.json")
# A training step: the forward, then gradients of every layer's input and of its weights, each
# about the forward's cost. (torch's FlopCounterMode counts the backward of a depthwise
# convolution as if it were dense, 18x MobileNetV3's forward, so the backward is not counted.)
TRAIN_FACTOR = 3.0
POSITIVE_FRACTION = 0.25  # torchvision's box_positive_fraction: the mask head trains on these regions at most
SIZE_DIVISIBLE = 32  # torchvision pads every batch to a multiple of this
_COUNT_SIZE = (800, 1088)  # px, already a multiple of SIZE_DIVISIBLE: where the pixel part is counted
_COUNT_REGIONS = 8  # regions the heads are counted on (their cost is per region)
PROBE_SHAPE = (1, 256, 56, 56)  # the probe's input: ResNet-50's first stage at a 224 px image
PROBE_BLOCKS = 2


@dataclass(frozen=True)
class ArchCost:
    """Forward FLOPs of one image: per padded input pixel, per box-head region, per mask-head region."""

    pixel: float
    box: float
    mask: float

    def image_flops(self, model: ModelConfig, height: float, width: float) -> tuple[float, float]:
        """(training step, inference) FLOPs of one ``height`` × ``width`` image (after resizing)."""
        pixels = _padded(height) * _padded(width)
        sampled = model.box_batch_size_per_image
        train = self.pixel * pixels + self.box * sampled + self.mask * math.floor(sampled * POSITIVE_FRACTION)
        inference = (self.pixel * pixels + self.box * model.rpn_test_proposals
                     + self.mask * model.detections_per_img)
        return TRAIN_FACTOR * train, inference


@dataclass(frozen=True)
class ModelCosts:
    archs: dict[str, ArchCost]
    probe: float  # forward FLOPs of probe_net on PROBE_SHAPE


def _padded(side: float) -> float:
    return math.ceil(side / SIZE_DIVISIBLE) * SIZE_DIVISIBLE


def read_costs(path: Path = COSTS_FILE) -> ModelCosts:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return ModelCosts({arch: ArchCost(**cost) for arch, cost in raw["archs"].items()}, raw["probe"])


def costs_json(costs: ModelCosts) -> str:
    archs = {arch: asdict(cost) for arch, cost in sorted(costs.archs.items())}
    return json.dumps({"archs": archs, "probe": costs.probe}, indent=2) + "\n"


def write_costs(path: Path = COSTS_FILE) -> bool:
    """Count the costs into ``path``; whether its content changed."""
    text = costs_json(count_costs())
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def probe_net() -> nn.Module:
    """The machine-speed probe: ResNet bottleneck blocks (1×1, 3×3, 1×1 convolutions with batch
    norm and ReLU), the layer mix most of a Mask R-CNN step runs."""

    def block() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(256, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
        )

    return nn.Sequential(*(block() for _ in range(PROBE_BLOCKS)))


def count_costs() -> ModelCosts:
    """Count every arch's and the probe's FLOPs (imports torchvision; a few seconds)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pedtune.model.factory import build_model  # torchvision: kept out of `pedtune check`'s imports

    def flops(net: nn.Module, inputs: torch.Tensor) -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(inputs)
        return float(counter.get_total_flops())

    archs = {}
    with torch.device("meta"):  # shapes only: nothing is computed
        for arch in get_args(Arch):
            net = build_model(ModelConfig(arch=arch, weights="none"))
            height, width = _COUNT_SIZE
            heads = net.roi_heads
            archs[arch] = ArchCost(
                flops(_PixelPart(net), torch.empty(1, 3, height, width)) / (height * width),
                flops(nn.Sequential(heads.box_head, heads.box_predictor), torch.empty(_COUNT_REGIONS, 256, 7, 7))
                / _COUNT_REGIONS,
                flops(nn.Sequential(heads.mask_head, heads.mask_predictor), torch.empty(_COUNT_REGIONS, 256, 14, 14))
                / _COUNT_REGIONS,
            )
        probe = flops(probe_net(), torch.empty(PROBE_SHAPE))
    return ModelCosts(archs, probe)


class _PixelPart(nn.Module):
    """The part of a Mask R-CNN that sees every pixel: backbone with FPN, then the RPN's head."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.backbone, self.rpn_head = net.backbone, net.rpn.head

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.rpn_head(list(self.backbone(images).values()))
