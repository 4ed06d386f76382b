"""Mask R-CNN variants by name, with heads for the dataset's categories plus the background
(2 classes for PennFudanPed: background, pedestrian).

Models are always built without downloading anything; pretrained tensors come from the
file the ``weights`` stage wrote and are loaded here, so training works offline.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from pedtune.config.schema import BACKBONE_STAGES, ModelConfig
from pedtune.errors import WeightsError

NUM_CLASSES = 2  # PennFudanPed's: background and pedestrian
# Keys of the class-specific layers: built fresh for the dataset's classes; rows of a pretrained
# model's classes are copied in where the weights say which (PREDICTOR_ROWS).
PREDICTOR_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")
# In a pretrained state: for each of the model's classes (0 the background) the pretrained
# predictors' row it starts from, -1 for a fresh one (pedtune.model.weights.with_predictor_rows).
PREDICTOR_ROWS = "roi_heads.predictor_rows"
_RESNET_LAYERS = ("layer4", "layer3", "layer2", "layer1", "conv1")


def _freeze_resnet_layers(body: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` ResNet stages (torchvision's own rule)."""
    trainable = list(_RESNET_LAYERS[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)


def _freeze_batch_norm(module: nn.Module) -> None:
    """Swap every BatchNorm2d below ``module`` for a FrozenBatchNorm2d (same state-dict keys)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_batch_norm(child)


class HostBoxPasteTransform(GeneralizedRCNNTransform):
    """torchvision's transform, pasting the predicted masks with their boxes held on the host.

    torchvision pastes each 28×28 mask into its image one at a time and reads the box's
    coordinates into Python as it goes (``paste_mask_in_image``): 13.8 scalar reads per mask,
    profiled. With the boxes on a GPU each read is a host–device sync, some 20 000 for the
    1508 detections of one 25-image val pass. Given the boxes on the host, the same function
    pastes the same masks on the same device without them.
    """

    def postprocess(
        self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if self.training:
            return result
        masks = [prediction.pop("masks", None) for prediction in result]
        result = super().postprocess(result, image_shapes, original_image_sizes)  # boxes to image scale
        for prediction, image_masks, size in zip(result, masks, original_image_sizes):
            if image_masks is not None:
                prediction["masks"] = paste_masks_in_image(image_masks, prediction["boxes"].cpu(), size)
        return result

    @classmethod
    def like(cls, transform: GeneralizedRCNNTransform) -> "HostBoxPasteTransform":
        return cls(transform.min_size, transform.max_size, transform.image_mean, transform.image_std,
                   transform.size_divisible, transform.fixed_size, _skip_resize=transform._skip_resize)


def build_model(
    cfg: ModelConfig, pretrained: Mapping[str, torch.Tensor] | None = None, num_classes: int = NUM_CLASSES
) -> MaskRCNN:
    """A Mask R-CNN for ``num_classes`` classes, the background included; ``pretrained`` holds
    weights in this model's key space without the class-specific predictors (or nothing)."""
    is_pretrained = bool(pretrained)
    # Frozen batch norm with pretrained weights, as torchvision does: batches of 2 images
    # give batch statistics too noisy to update running estimates with.
    norm_layer = FrozenBatchNorm2d if is_pretrained else nn.BatchNorm2d
    # Random weights are trained everywhere: a frozen randomly initialised stem helps no one.
    trainable = cfg.trainable_backbone_layers if is_pretrained else BACKBONE_STAGES[cfg.arch]
    common = {
        "min_size": cfg.min_size,
        "max_size": cfg.max_size,
        "box_detections_per_img": cfg.detections_per_img,
        # Proposals kept per image at inference (before and after the RPN's NMS); training
        # keeps torchvision's 2000. Fewer make the per-epoch val scoring much cheaper.
        "rpn_pre_nms_top_n_test": cfg.rpn_test_proposals,
        "rpn_post_nms_top_n_test": cfg.rpn_test_proposals,
        "box_batch_size_per_image": cfg.box_batch_size_per_image,
    }
    if cfg.arch == "maskrcnn_resnet50_fpn":
        backbone = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, norm_layer=norm_layer, trainable_layers=trainable
        )
        model = MaskRCNN(backbone, num_classes=num_classes, **common)
    elif cfg.arch == "maskrcnn_resnet50_fpn_v2":
        model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes, **common)
        # torchvision's builder has no norm_layer argument and always uses BatchNorm2d.
        if is_pretrained:
            _freeze_batch_norm(model.backbone.body)
        _freeze_resnet_layers(model.backbone.body, trainable)
    elif cfg.arch == "maskrcnn_mobilenet_v3_large_fpn":
        backbone = mobilenet_backbone(
            backbone_name="mobilenet_v3_large",
            weights=None,
            fpn=True,
            norm_layer=norm_layer,
            trainable_layers=trainable,
        )
        # Its FPN yields 3 feature maps, so the anchor generator needs 3 size/ratio tuples.
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
        model = MaskRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchors, **common)
    else:  # pragma: no cover - the schema admits only the archs above
        raise ValueError(f"unknown arch {cfg.arch!r}")
    model.transform = HostBoxPasteTransform.like(model.transform)
    if is_pretrained:
        load_pretrained(model, pretrained)
    return model


def load_pretrained(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    state = dict(state)
    rows = state.pop(PREDICTOR_ROWS, None)
    predictors = {k: state.pop(k) for k in list(state) if k.startswith(PREDICTOR_PREFIXES)} if rows is not None else {}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise WeightsError(f"pretrained weights do not fit the model: {error}") from None
    if result.unexpected_keys:
        raise WeightsError(f"pretrained weights hold keys the model lacks: {result.unexpected_keys[:5]}")
    if rows is not None:
        copy_predictor_rows(model, predictors, rows)


def copy_predictor_rows(model: nn.Module, predictors: Mapping[str, torch.Tensor], rows: torch.Tensor) -> None:
    """Copy into each class's rows of the model's (freshly initialised) predictors the pretrained
    predictors' row ``rows[class]`` names; classes with -1 keep their fresh rows."""
    own = model.state_dict()  # tensors sharing storage with the parameters
    classes = rows.tolist()
    with torch.no_grad():
        for key, source in predictors.items():
            target = own.get(key)
            if target is None or target.shape[0] % len(classes) or target.shape[1:] != source.shape[1:]:
                raise WeightsError(f"pretrained predictor {key} {tuple(source.shape)} does not fit the model's "
                                   f"{None if target is None else tuple(target.shape)} for {len(classes)} classes")
            per_class = target.shape[0] // len(classes)  # 4 box coordinates per class in bbox_pred, else 1
            for label, row in enumerate(classes):
                if row >= 0:
                    target[label * per_class:(label + 1) * per_class] = source[row * per_class:(row + 1) * per_class]
