"""COCO bbox and segm AP: the ground truth from our samples, predictions from the model.

Scored by pycocotools or, behind ``train.coco_backend``, by faster-coco-eval, which gives the
same numbers (bench/evaluation.py checks both on the same predictions) several times faster.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pedtune.config.schema import CocoBackend
from pedtune.data.dataset import SampleSet

IOU_TYPES = ("bbox", "segm")
# COCOeval.stats positions of the numbers we report, under stable names.
STAT_NAMES = {0: "mAP", 1: "AP50", 2: "AP75"}
METRIC_NAMES = tuple(f"{iou}_{name}" for iou in IOU_TYPES for name in STAT_NAMES.values())
MASK_THRESHOLD = 0.5  # a mask probability above it is inside the instance (torchvision's convention)


@dataclass(frozen=True)
class GroundTruth:
    """A COCO index of the ground truth, with the evaluator class of the backend that indexed it."""

    coco: Any  # pycocotools.coco.COCO or faster_coco_eval.COCO
    evaluator: type  # COCOeval or COCOeval_faster: same constructor, same stats


def coco_index(dataset: dict, backend: CocoBackend = "pycocotools") -> GroundTruth:
    """Index a COCO-format ``dataset`` dict (images, annotations, categories) with ``backend``."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FasterCOCO, COCOeval_faster

        coco, evaluator = FasterCOCO(), COCOeval_faster
    else:
        coco, evaluator = COCO(), COCOeval
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return GroundTruth(coco, evaluator)


def column_major(masks: torch.Tensor) -> torch.Tensor:
    """The same masks, each H x W plane stored column by column (the last two strides swapped):
    the layout :func:`_rle` hands pycocotools, which then needs no copy of its own."""
    return masks.transpose(-1, -2).contiguous().transpose(-1, -2)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    boxes = boxes.clone()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes.tolist()


def ground_truth(samples: SampleSet, backend: CocoBackend = "pycocotools") -> GroundTruth:
    """A COCO index of the samples' samples; image ids are the samples' indices."""
    images, annotations = [], []
    for index in range(len(samples)):
        sample = samples[index]
        height, width = sample.image.shape[1:]
        images.append({"id": index, "height": height, "width": width, "file_name": sample.stem})
        for box, mask in zip(_xywh(sample.boxes), sample.masks.numpy()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": 1,
                    "bbox": box,
                    "area": float(mask.sum()),
                    "segmentation": _rle(mask),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "person"}]
    return coco_index({"images": images, "annotations": annotations, "categories": categories}, backend)


def to_coco_results(
    image_id: int, prediction: dict[str, torch.Tensor], mask_threshold: float = MASK_THRESHOLD
) -> list[dict]:
    """One model output (boxes, scores, labels, masks [N,1,H,W]) as COCO result dicts.

    Masks may be probabilities (thresholded here) or already binary (bool, as ``predict`` gives them).
    """
    boxes = _xywh(prediction["boxes"].float().cpu())
    scores = prediction["scores"].float().cpu().tolist()
    masks = prediction["masks"][:, 0]
    if masks.dtype != torch.bool:
        masks = masks > mask_threshold
    masks = masks.cpu().numpy()
    return [
        {"image_id": image_id, "category_id": 1, "bbox": box, "score": score, "segmentation": _rle(mask)}
        for box, score, mask in zip(boxes, scores, masks)
    ]


def coco_metrics(truth: GroundTruth, results: Iterable[dict]) -> dict[str, float]:
    """bbox/segm mAP, AP50, AP75; an empty result list scores 0 (COCO's loadRes cannot load it)."""
    results = list(results)
    if not results:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        detections = truth.coco.loadRes(results)
        for iou_type in IOU_TYPES:
            evaluator = truth.evaluator(truth.coco, detections, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            for position, name in STAT_NAMES.items():
                # COCOeval reports -1 where there is no ground truth to score against.
                metrics[f"{iou_type}_{name}"] = max(0.0, float(evaluator.stats[position]))
    return metrics
