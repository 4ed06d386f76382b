"""COCO bbox and segm AP: the ground truth at each image's original size, predictions from the model.

As torchvision's references, detectron2 and MMDetection score: against the annotations at
the size of the image file (the dataset's own boxes and masks, crowd regions included), with
the predictions mapped back there (boxes scaled, masks pasted at that size:
:func:`pedtune.engine.original_size.detect`). Training sees resized samples; scoring does not.

Scored by pycocotools or, behind ``train.coco_backend``, by faster-coco-eval, which gives the
same numbers (bench/evaluation.py checks both on the same predictions) several times faster.
"""

from __future__ import annotations

import contextlib
import io
import re
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
    """A COCO index of the samples' images at their original size; image ids are the samples'
    indices, category ids its labels."""
    images, annotations = [], []
    for index in range(len(samples)):
        (height, width), entries = samples.truth(index)
        images.append({"id": index, "height": height, "width": width, "file_name": samples.stems[index]})
        for entry in entries:
            annotations.append({"id": len(annotations) + 1, "image_id": index, **entry})
    categories = [{"id": label, "name": name} for label, name in samples.categories.items()]
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
    labels = prediction["labels"].cpu().tolist()
    return [
        {"image_id": image_id, "category_id": int(label), "bbox": box, "score": score, "segmentation": _rle(mask)}
        for box, score, mask, label in zip(boxes, scores, masks, labels)
    ]


def category_metric(iou_type: str, name: str) -> str:
    """The key of one category's AP (IoU 0.50:0.95, all areas) among the metrics: ``bbox_AP/person``.

    Characters MLflow refuses in a metric name become ``_`` (``person's bag`` -> ``person_s bag``).
    """
    return f"{iou_type}_AP/{re.sub(r'[^A-Za-z0-9_ ./-]', '_', name)}"


def _per_category(evaluator: Any, truth: GroundTruth, iou_type: str) -> dict[str, float]:
    """AP per category from COCOeval's precision table; a category without ground truth in the
    scored images has none (-1 throughout) and no entry: it is "n/a", not 0."""
    precision = np.asarray(evaluator.eval["precision"])  # [IoU, recall, category, area, max dets]
    names = {cat["id"]: cat["name"] for cat in truth.coco.dataset["categories"]}
    metrics = {}
    for position, category in enumerate(evaluator.params.catIds):
        values = precision[:, :, position, 0, -1]
        if (values > -1).any():
            metrics[category_metric(iou_type, names[category])] = float(values[values > -1].mean())
    return metrics


def scored_categories(truth: GroundTruth) -> dict[str, float]:
    """Per-category APs of no detection: 0 for each category the ground truth holds (no entry for the others)."""
    present = {ann["category_id"] for ann in truth.coco.dataset["annotations"] if not ann.get("iscrowd", 0)}
    return {category_metric(iou, cat["name"]): 0.0 for iou in IOU_TYPES
            for cat in truth.coco.dataset["categories"] if cat["id"] in present}


def coco_metrics(truth: GroundTruth, results: Iterable[dict], per_category: bool = False) -> dict[str, float]:
    """bbox/segm mAP, AP50, AP75; an empty result list scores 0 (COCO's loadRes cannot load it).

    ``per_category`` adds each category's AP (:func:`category_metric`) where there are several.
    """
    results = list(results)
    several = per_category and len(truth.coco.dataset["categories"]) > 1
    if not results:
        return {**dict.fromkeys(METRIC_NAMES, 0.0), **(scored_categories(truth) if several else {})}
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
            if several:
                metrics.update(_per_category(evaluator, truth, iou_type))
    return metrics
