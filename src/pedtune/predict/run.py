"""Predict a batch at a time and write the output folder whole (COCO results, image list, overlays).

The folder holds ``detections.json`` (COCO results: ``bbox`` as x, y, width, height in the image
file's pixels, ``segmentation`` as RLE, ``score``, ``category_id`` in the model's dataset's ids;
every detection the model makes, as COCO scoring expects), ``images.json`` (the COCO ``images``
and ``categories`` the results refer to: ``COCO("images.json").loadRes("detections.json")``), and
``overlays/`` (each image with its detections scoring at least the threshold drawn on it, a JPEG: PNG's
encoding cost a tenth of a CPU prediction's time, JPEG's a hundredth of that), plus
``scores.json`` when annotations were given.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.io import write_jpeg

from pedtune import console
from pedtune.engine.coco_eval import MASK_THRESHOLD, to_coco_results
from pedtune.errors import DataError
from pedtune.evaluate.pictures import draw_instances
from pedtune.io import atomic_path, write_json
from pedtune.predict.images import image_batches
from pedtune.predict.scoring import Annotations
from pedtune.predict.source import Predictor

log = console.get(__name__)
DETECTIONS, IMAGES, OVERLAYS, SCORES = "detections.json", "images.json", "overlays", "scores.json"
OVERLAY_QUALITY = 90  # JPEG quality of the overlays


@dataclass(frozen=True)
class Outcome:
    predicted: int
    detections: int
    skipped: list[tuple[Path, str]]  # images that could not be decoded, with the reason
    scores: dict[str, float] | None
    wall_time_s: float


def overlay_name(path: Path, image_id: int, taken: set[str]) -> str:
    name = f"{path.stem}.jpg"
    if name in taken:  # two inputs with one stem (from two folders)
        name = f"{path.stem}-{image_id}.jpg"
    taken.add(name)
    return name


def to_dataset_ids(results: list[dict[str, Any]], category_ids: dict[int, int]) -> list[dict[str, Any]]:
    for result in results:
        result["category_id"] = category_ids[result["category_id"]]
    return results


def predict_images(
    predictor: Predictor, images: Sequence[Path], output: Path, device: torch.device, batch_size: int,
    num_workers: int, score_threshold: float, annotations: Annotations | None = None,
) -> Outcome:
    """Predict ``images`` and write ``output`` (replaced whole, only once every image was tried)."""
    started = time.perf_counter()
    model = predictor.model.to(device).eval()
    ids = annotations.image_ids if annotations is not None else list(range(1, len(images) + 1))
    results: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    taken: set[str] = set()
    progress = console.Progress(len(images), "predict", log, unit="img")
    with atomic_path(output) as folder:
        (folder / OVERLAYS).mkdir(parents=True)
        with torch.inference_mode():
            for batch in image_batches(images, batch_size, num_workers):
                decoded = [item for item in batch if item.image is not None]
                for item in batch:
                    if item.image is None:
                        log.warning(f"skipped {item.path}: cannot decode it ({item.error})")
                        skipped.append((item.path, item.error or "unreadable"))
                if decoded:
                    inputs = [item.image.to(device, non_blocking=True).float() / 255 for item in decoded]
                    for item, prediction in zip(decoded, model(inputs)):
                        image_id = ids[item.index]
                        prediction = {key: value.cpu() for key, value in prediction.items()}
                        # numpy's comparison: a sixth of the time of torch's on the CPU
                        prediction["masks"] = torch.from_numpy(prediction["masks"].numpy() > MASK_THRESHOLD)
                        results.extend(to_dataset_ids(to_coco_results(image_id, prediction), predictor.category_ids))
                        height, width = item.image.shape[-2:]
                        entries.append({"id": image_id, "file_name": str(item.path), "height": int(height),
                                        "width": int(width)})
                        write_jpeg(overlay(item.image, prediction, predictor, score_threshold),
                                   str(folder / OVERLAYS / overlay_name(item.path, image_id, taken)), OVERLAY_QUALITY)
                progress.update(len(batch))
        progress.close()
        if not entries:
            raise DataError(f"none of the {len(images)} images could be decoded (first: {skipped[0][0]}: "
                            f"{skipped[0][1]})")
        categories = [{"id": cat_id, "name": name} for cat_id, name in predictor.dataset_categories().items()]
        write_json(folder / DETECTIONS, results)
        write_json(folder / IMAGES, {"images": entries, "categories": categories,
                                     "skipped": [{"file_name": str(p), "error": e} for p, e in skipped]})
        scores = None
        if annotations is not None and entries:
            scores = annotations.score(results, {entry["id"] for entry in entries})
            write_json(folder / SCORES, scores)
    return Outcome(len(entries), len(results), skipped, scores, time.perf_counter() - started)


def overlay(image: torch.Tensor, prediction: dict[str, torch.Tensor], predictor: Predictor,
            score_threshold: float) -> torch.Tensor:
    """``image`` (uint8) with the detections scoring at least ``score_threshold``: mask, box, name and score."""
    # Indices, not a boolean index: torch's boolean indexing of the masks copies them element by element.
    kept = (prediction["scores"] >= score_threshold).nonzero()[:, 0]
    named = len(predictor.categories) > 1
    texts = [f"{predictor.categories.get(int(label), label)} {score:.2f}" if named else f"{score:.2f}"
             for label, score in zip(prediction["labels"][kept].tolist(), prediction["scores"][kept].tolist())]
    return draw_instances(image, prediction["masks"][:, 0].index_select(0, kept), prediction["boxes"][kept], texts)
