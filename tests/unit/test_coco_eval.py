from __future__ import annotations

import copy

import pytest
import torch
from faster_coco_eval import COCOeval_faster
from pycocotools.cocoeval import COCOeval

from pedtune.data.dataset import SampleSet
from pedtune.engine.coco_eval import METRIC_NAMES, coco_metrics, column_major, ground_truth, to_coco_results


def _perfect(samples: SampleSet, index: int) -> dict[str, torch.Tensor]:
    sample = samples[index]
    return {
        "boxes": sample.boxes,
        "scores": torch.ones(len(sample.masks)),
        "labels": torch.ones(len(sample.masks), dtype=torch.int64),
        "masks": sample.masks[:, None].float(),
    }


def test_perfect_predictions_score_one_and_none_score_zero(synthetic_store: SampleSet):
    coco = ground_truth(synthetic_store)
    results = [r for i in range(len(synthetic_store)) for r in to_coco_results(i, _perfect(synthetic_store, i))]
    perfect = coco_metrics(coco, results)
    assert set(perfect) == set(METRIC_NAMES)
    assert all(abs(value - 1.0) < 1e-9 for value in perfect.values()), perfect
    assert coco_metrics(coco, []) == dict.fromkeys(METRIC_NAMES, 0.0)


def test_shifted_boxes_lose_strict_ap_but_masks_keep_it(synthetic_store: SampleSet):
    coco = ground_truth(synthetic_store)
    results = []
    for index in range(len(synthetic_store)):
        prediction = _perfect(synthetic_store, index)
        box = prediction["boxes"]
        width = (box[:, 2] - box[:, 0])[:, None]
        prediction["boxes"] = box + torch.cat([width * 0.6, torch.zeros_like(width)] * 2, dim=1)
        results += to_coco_results(index, prediction)
    metrics = coco_metrics(coco, results)
    assert metrics["bbox_AP50"] < 0.5 and metrics["segm_mAP"] > 0.99


def test_both_backends_score_a_mixed_prediction_set_alike(synthetic_store: SampleSet):
    # Half the images predicted perfectly, half with boxes shifted off their pedestrians and
    # low scores, so every AP lies strictly between 0 and 1 where the backends could differ.
    results = []
    for index in range(len(synthetic_store)):
        prediction = _perfect(synthetic_store, index)
        if index % 2:
            box = prediction["boxes"]
            width = (box[:, 2] - box[:, 0])[:, None]
            prediction["boxes"] = box + torch.cat([width * 0.4, torch.zeros_like(width)] * 2, dim=1)
            prediction["masks"] = prediction["masks"].roll(shifts=3, dims=-1)
            prediction["scores"] = prediction["scores"] * 0.3
        results += to_coco_results(index, prediction)
    pycocotools, faster = ground_truth(synthetic_store, "pycocotools"), ground_truth(synthetic_store, "faster_coco_eval")
    assert (pycocotools.evaluator, faster.evaluator) == (COCOeval, COCOeval_faster)
    reference = coco_metrics(pycocotools, copy.deepcopy(results))
    scored = coco_metrics(faster, copy.deepcopy(results))
    assert any(0.0 < value < 1.0 for value in reference.values()), reference
    assert scored == pytest.approx(reference, abs=1e-4)
    for truth in (pycocotools, faster):
        assert coco_metrics(truth, []) == dict.fromkeys(METRIC_NAMES, 0.0)


def test_binary_masks_give_the_results_their_probabilities_give(synthetic_store: SampleSet):
    # predict hands over masks already thresholded on the device; scoring must not change.
    prediction = _perfect(synthetic_store, 0)
    probabilities = prediction["masks"] * 0.6 + 0.2  # 0.2 outside each pedestrian, 0.8 inside
    binary = to_coco_results(0, {**prediction, "masks": probabilities > 0.5})
    assert binary == to_coco_results(0, {**prediction, "masks": probabilities})
    assert len(binary) == len(prediction["scores"]) > 0


def test_column_major_masks_reach_the_encoder_without_a_layout_copy(synthetic_store: SampleSet):
    # iter_predictions lays GPU masks out column by column before the copy to the CPU.
    prediction = _perfect(synthetic_store, 0)
    masks = prediction["masks"] > 0.5
    transposed = column_major(masks)
    assert torch.equal(transposed, masks)
    planes = transposed[:, 0].numpy()
    assert all(plane.flags.f_contiguous and not plane.flags.c_contiguous for plane in planes)
    assert to_coco_results(0, {**prediction, "masks": transposed}) == to_coco_results(0, {**prediction, "masks": masks})
