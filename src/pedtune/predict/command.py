"""``pedtune predict``: resolve the images, the model and the settings, predict, summarise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pedtune import console
from pedtune.config import StudyConfig
from pedtune.device import resolve_device
from pedtune.predict.images import collect_images
from pedtune.predict.run import DETECTIONS, IMAGES, OVERLAYS, SCORES, Outcome, predict_images
from pedtune.predict.scoring import match_annotations
from pedtune.predict.source import load_predictor
from pedtune.tracking.store import resolve_tracking_uri
from pedtune.units import duration

log = console.get(__name__)


def run_predict(
    config: StudyConfig, inputs: Sequence[str], model: str, output: Path, annotations: Path | None = None,
    batch_size: int | None = None, score_threshold: float | None = None,
) -> Outcome:
    """Predict every image ``inputs`` name with ``model``; params.yaml gives the device, the batch size,
    the workers, the MLflow store and the default score threshold."""
    images = collect_images(inputs)
    device = resolve_device(config.train.device)
    predictor = load_predictor(model, resolve_tracking_uri(config.mlflow.tracking_uri))
    matched = match_annotations(annotations, images, predictor.dataset_categories()) if annotations else None
    threshold = next(t for t in (score_threshold, predictor.score_threshold, config.evaluate.score_threshold)
                     if t is not None)
    log.info(f"{len(images)} images, model {predictor.source}, on {device}")
    outcome = predict_images(predictor, images, output, device, batch_size or config.train.eval_batch_size,
                             config.data.num_workers, threshold, matched)
    lines = [f"{outcome.predicted} images, {outcome.detections} detections in {duration(outcome.wall_time_s)} "
             f"({outcome.predicted / outcome.wall_time_s:.2f} img/s); overlays show scores ≥ {threshold:g}"]
    if outcome.scores is not None:
        lines.append(f"bbox mAP {outcome.scores['bbox_mAP']:.4f}, segm mAP {outcome.scores['segm_mAP']:.4f} "
                     f"against {annotations}")
    if outcome.skipped:
        lines.append(f"{len(outcome.skipped)} image(s) skipped (cannot decode): "
                     + ", ".join(str(path) for path, _ in outcome.skipped))
    wrote = [output / name for name in (DETECTIONS, IMAGES, OVERLAYS)] + ([output / SCORES] if outcome.scores else [])
    console.summary(log, "\n".join(lines), wrote=wrote)
    return outcome
