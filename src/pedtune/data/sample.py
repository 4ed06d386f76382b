"""A decoded sample at the model's input scale, and the resize that makes it: what every dataset format's reader yields."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from pedtune.data.scale import scale_for


@dataclass(frozen=True)
class Sample:
    """One decoded image with its instances, already at the model's input scale."""

    stem: str
    image: torch.Tensor  # uint8 [3, H, W]
    masks: torch.Tensor  # bool [N, H, W]
    labels: torch.Tensor  # int64 [N], 1..K (0 is the background)
    original_size: tuple[int, int]  # (height, width) of the image file, where it is scored

    @property
    def boxes(self) -> torch.Tensor:
        # Pixel-edge convention (x_max + 1): a one-pixel-wide instance still has a
        # positive width, which Mask R-CNN requires of every training box.
        boxes = masks_to_boxes(self.masks) if len(self.masks) else torch.zeros((0, 4))
        return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])


@dataclass(frozen=True)
class Decoded:
    """An image and its instances at the image file's size."""

    image: torch.Tensor  # uint8 [3, H, W]
    masks: torch.Tensor  # bool [N, H, W]
    labels: torch.Tensor  # int64 [N]


def resized(stem: str, decoded: Decoded, min_size: int, max_size: int) -> Sample:
    """``decoded`` at the scale the model sees it (the model's own transform then leaves it as it is)."""
    image, masks = decoded.image, decoded.masks
    height, width = image.shape[1:]
    scale = scale_for(height, width, min_size, max_size)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    image = v2.functional.resize(image, size, antialias=True)
    # NEAREST_EXACT samples each output pixel's centre, as the antialiased image resize does;
    # torchvision's default (legacy) NEAREST takes the top-left source pixel, half a pixel off.
    masks = v2.functional.resize(
        tv_tensors.Mask(masks), size, interpolation=v2.InterpolationMode.NEAREST_EXACT
    ).as_subclass(torch.Tensor)
    # An instance only a pixel or two wide can vanish when shrunk; it has no box then.
    kept = masks.flatten(1).any(dim=1)
    return Sample(stem=stem, image=image.contiguous(), masks=masks[kept].contiguous(),
                  labels=decoded.labels[kept].contiguous(), original_size=(int(height), int(width)))
