"""Old vs new COCO scoring on the same predictions: at the resized sample's size vs the image file's.

Until pedtune scored at the original size, ``engine.coco_eval.ground_truth`` built the ground
truth from the samples the dataset had already resized to the model's input, and scored the
model's detections there. Now both live at the image file's size (boxes scaled, masks pasted
there). Two prediction sets are scored both ways:

- ``model``: a light Mask R-CNN trained ``--epochs`` from random weights (no COCO weights
  offline); its detections (the same tensors before postprocessing) mapped to the resized
  sample (old) and to the original image (new).
- ``oracle``: each resized sample's own ground truth as detections (score 1); old scoring gives
  it 1 by construction, new scoring measures what the resize alone costs a perfect detector at
  that scale (boxes scaled back, masks resized back with nearest-exact sampling).

Usage: ``python -m bench.original_size_scoring --data PATH [--epochs N] [--skip-model]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from bench.common import dataset, emit, log, parser, sample_sets, setup, study_config, timer
from pedtune.data.dataset import SampleSet, truth_from_masks
from pedtune.engine.coco_eval import coco_index, coco_metrics, ground_truth, to_coco_results
from pedtune.engine.train import _loader, fit, predict


def resized_ground_truth(samples: SampleSet) -> Any:
    """The old ground truth: built from the resized samples (what ``ground_truth`` did before)."""
    images, annotations = [], []
    for index in range(len(samples)):
        sample = samples[index]
        height, width = sample.image.shape[1:]
        images.append({"id": index, "height": int(height), "width": int(width), "file_name": sample.stem})
        for entry in truth_from_masks(sample.masks, sample.labels):
            annotations.append({"id": len(annotations) + 1, "image_id": index, **entry})
    categories = [{"id": label, "name": name} for label, name in samples.categories.items()]
    return coco_index({"images": images, "annotations": annotations, "categories": categories})


def oracle(samples: SampleSet, original: bool) -> list[dict]:
    """Each resized sample's ground truth as detections, at its size or mapped back to the original."""
    results = []
    for index in range(len(samples)):
        sample = samples[index]
        boxes, masks = sample.boxes, sample.masks
        if original:
            (height, width), (h, w) = sample.original_size, sample.image.shape[1:]
            boxes = boxes * torch.tensor([width / w, height / h, width / w, height / h])
            masks = v2.functional.resize(tv_tensors.Mask(masks), [height, width],
                                         interpolation=v2.InterpolationMode.NEAREST_EXACT).as_subclass(torch.Tensor)
        prediction = {"boxes": boxes, "scores": torch.ones(len(masks)), "labels": sample.labels,
                      "masks": masks[:, None]}
        results += to_coco_results(index, prediction)
    return results


def scored(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in metrics.items()}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs to train the model whose predictions are scored")
    p.add_argument("--skip-model", action="store_true", help="only the oracle (no training)")
    args = p.parse_args(argv)
    setup(args)
    config = study_config(args, {"model": {"weights": "none"}, "data": {"num_workers": 0},
                                 "train": {"epochs": args.epochs}})
    result: dict[str, Any] = {"min_size": config.model.min_size, "max_size": config.model.max_size}
    with dataset(args) as root:
        train, val = sample_sets(root, config)
        old_truth, new_truth = resized_ground_truth(val), ground_truth(val)
        result["val_images"] = len(val)
        result["oracle"] = {"old": scored(coco_metrics(old_truth, oracle(val, original=False))),
                            "new": scored(coco_metrics(new_truth, oracle(val, original=True)))}
        log(f"oracle: {result['oracle']}")
        if not args.skip_model:
            started = timer()
            model = fit(config, train, val).model
            device = next(model.parameters()).device
            loader = _loader(val, config.train.eval_batch_size, 0, 0.0, None)
            at_sample = predict(model, loader, device, original_size=False)
            at_original = predict(model, loader, device, original_size=True)
            result["model"] = {
                "epochs": args.epochs,
                "old": scored(coco_metrics(old_truth, [r for i, p in at_sample for r in to_coco_results(i, p)])),
                "new": scored(coco_metrics(new_truth, [r for i, p in at_original for r in to_coco_results(i, p)])),
                "train_s": round(timer() - started, 1),
            }
            log(f"model: {result['model']}")
    for part in ("oracle", "model"):
        if part in result:
            result[part]["new_minus_old"] = {k: round(result[part]["new"][k] - result[part]["old"][k], 4)
                                             for k in result[part]["new"]}
    return emit("original_size_scoring", args, result)


if __name__ == "__main__":
    main()
