"""COCO bbox and segm AP via pycocotools: the ground truth from our samples, predictions from the model."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pedtune.data.dataset import SampleStore

IOU_TYPES = ("bbox", "segm")
# COCOeval.stats positions of the numbers we report, under stable names.
STAT_NAMES = {0: "mAP", 1: "AP50", 2: "AP75"}
METRIC_NAMES = tuple(f"{iou}_{name}" for iou in IOU_TYPES for name in STAT_NAMES.values())


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    boxes = boxes.clone()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes.tolist()


def ground_truth(store: SampleStore) -> COCO:
    """A COCO index of the store's samples; image ids are the store's indices."""
    images, annotations = [], []
    for index in range(len(store)):
        sample = store[index]
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
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def to_coco_results(image_id: int, prediction: dict[str, torch.Tensor], mask_threshold: float = 0.5) -> list[dict]:
    """One model output (boxes, scores, labels, masks [N,1,H,W]) as COCO result dicts."""
    boxes = _xywh(prediction["boxes"].float().cpu())
    scores = prediction["scores"].float().cpu().tolist()
    masks = (prediction["masks"][:, 0] > mask_threshold).cpu().numpy()
    return [
        {"image_id": image_id, "category_id": 1, "bbox": box, "score": score, "segmentation": _rle(mask)}
        for box, score, mask in zip(boxes, scores, masks)
    ]


def coco_metrics(coco_gt: COCO, results: Iterable[dict]) -> dict[str, float]:
    """bbox/segm mAP, AP50, AP75; an empty result list scores 0 (pycocotools cannot load it)."""
    results = list(results)
    if not results:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        for iou_type in IOU_TYPES:
            evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            for position, name in STAT_NAMES.items():
                # COCOeval reports -1 where there is no ground truth to score against.
                metrics[f"{iou_type}_{name}"] = max(0.0, float(evaluator.stats[position]))
    return metrics
