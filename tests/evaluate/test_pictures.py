from __future__ import annotations

import torch
from torchvision.utils import draw_segmentation_masks

from pedtune.evaluate.pictures import MASK_ALPHA, blend_masks, draw_instances, instance_colors


def _masks(height: int, width: int) -> torch.Tensor:
    """Four masks: two that overlap, one apart from them, one empty."""
    masks = torch.zeros(4, height, width, dtype=torch.bool)
    masks[0, 2:20, 3:15] = True
    masks[1, 10:28, 8:25] = True  # overlaps mask 0 in rows 10-19, columns 8-14
    masks[2, 25:30, 30:38] = True
    return masks


def test_masks_are_blended_as_torchvision_draws_them_overlaps_included():
    image = torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    masks = _masks(32, 40)
    colors = instance_colors(len(masks))
    expected = draw_segmentation_masks(image, masks, alpha=MASK_ALPHA, colors=[tuple(c) for c in colors.tolist()])
    blended = blend_masks(image, masks, colors)
    assert blended.dtype == torch.uint8 and blended.shape == image.shape
    assert (blended.int() - expected.int()).abs().max() <= 1
    outside = ~masks.any(0)
    assert torch.equal(blended[:, outside], image[:, outside])  # pixels under no mask are untouched
    assert not torch.equal(blended[:, 12, 10], blended[:, 5, 5])  # the overlap is not mask 0's colour


def test_more_masks_than_255_get_a_label_each():
    image = torch.full((3, 4, 300), 100, dtype=torch.uint8)
    masks = torch.zeros(300, 4, 300, dtype=torch.bool)
    masks[torch.arange(300), :, torch.arange(300)] = True  # mask i: column i
    colors = instance_colors(300)
    blended = blend_masks(image, masks, colors)
    expected = draw_segmentation_masks(image, masks, alpha=MASK_ALPHA, colors=[tuple(c) for c in colors.tolist()])
    assert (blended.int() - expected.int()).abs().max() <= 1


def test_draw_instances_draws_boxes_over_the_masks_and_returns_an_image_without_instances_as_is():
    image = torch.zeros(3, 32, 40, dtype=torch.uint8)
    assert draw_instances(image, torch.zeros(0, 32, 40, dtype=torch.bool), torch.zeros(0, 4)) is image
    masks = _masks(32, 40)[:1]
    drawn = draw_instances(image, masks, torch.tensor([[3.0, 2.0, 14.0, 19.0]]), ["0.97"])
    first = tuple(instance_colors(1)[0].tolist())
    assert tuple(drawn[:, 2, 8].tolist()) == first  # the box's top edge, in the instance's colour
    assert drawn[:, 10, 8].tolist() != [0, 0, 0]  # inside: the mask's colour blended in
