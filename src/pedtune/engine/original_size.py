"""Detections at each image's original size, from a model that saw the resized sample.

``GeneralizedRCNN.forward`` maps its detections back to the size of the tensor it was given,
which here is the sample the dataset already resized. Given the image files' sizes instead,
the same steps (transform, backbone, RPN, ROI heads, postprocess) scale the boxes to the
original image and paste the masks at its size, as torchvision's references score: the
tensors and the detections before postprocessing are the same as ``model(images)``'s.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor
from torchvision.models.detection import MaskRCNN


def detect(model: MaskRCNN, images: list[Tensor], original_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
    """``model(images)`` in eval mode, with boxes and masks at ``original_sizes`` ((height, width) each)."""
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    return model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
