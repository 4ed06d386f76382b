"""The ``train`` stage: the initial configuration, trained once and logged to MLflow."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from pedtune import console, paths
from pedtune.config import StudyConfig, run_params
from pedtune.device import resolve_device
from pedtune.engine.train import EpochResult, fit
from pedtune.io import write_json, write_text
from pedtune.model.checkpoint import save_model
from pedtune.run_limits import use_threads
from pedtune.stages.inputs import read_inputs
from pedtune.tracking.record import write_run_record
from pedtune.tracking.store import log_metrics, log_params, open_store, source_tags, tracked_run
from pedtune.units import duration

log = console.get(__name__)
HISTORY_FIELDS = ("epoch", "train_loss", "lr", "bbox_mAP", "bbox_AP50", "bbox_AP75", "segm_mAP", "segm_AP50",
                  "segm_AP75", "epoch_time_s")


def history_csv(history: list[dict[str, float]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for epoch, metrics in enumerate(history, start=1):
        writer.writerow({"epoch": epoch, **{k: f"{v:.6g}" for k, v in metrics.items()}})
    return out.getvalue()


def mlflow_epoch_hook(store, run_id: str) -> Callable[[EpochResult, Callable], None]:
    def on_epoch_end(result: EpochResult, _state: Callable) -> None:
        log_metrics(store, run_id, result.metrics, step=result.epoch)

    return on_epoch_end


def run_train(config: StudyConfig) -> dict[str, float]:
    resolve_device(config.train.device)  # before the MLflow run and the data: no GPU fails at once
    store = open_store(config.mlflow)  # before any training: a bad URI must not cost an hour
    inputs = read_inputs(config)
    use_threads(config)  # the trials' and evaluate runs' count: the same params train the same numbers
    train_samples, val_samples, pretrained = inputs.samples("train"), inputs.samples("val"), inputs.pretrained()
    tags = {"stage": "train", **source_tags(), "dataset_hash": inputs.dataset_hash}
    with tracked_run(store, "train", tags) as run_id:
        log_params(store, run_id, run_params(config))
        result = fit(config, train_samples, val_samples, pretrained, on_epoch_end=mlflow_epoch_hook(store, run_id))
        final = result.final
        metrics = {
            **{k: final[k] for k in ("bbox_mAP", "bbox_AP50", "bbox_AP75", "segm_mAP", "segm_AP50", "segm_AP75")},
            "epochs": config.train.epochs,
            "wall_time_s": round(result.wall_time_s, 1),
        }
        save_model(result.model.state_dict(), config.model, config.train, train_samples.categories,
                   inputs.index.category_ids, paths.TRAINED_MODEL)
        write_json(paths.TRAIN_METRICS, metrics)
        write_text(paths.TRAIN_HISTORY, history_csv(result.history))
        for artifact in (paths.TRAIN_METRICS, paths.TRAIN_HISTORY, paths.TRAINED_MODEL):
            store.client.log_artifact(run_id, str(artifact))
        write_run_record(paths.STAGE_RUNS["train"], "train", run_id, store.experiment_name)
    console.summary(
        log,
        f"val bbox_mAP {metrics['bbox_mAP']:.4f}, segm_mAP {metrics['segm_mAP']:.4f} after {config.train.epochs} "
        f"epochs in {duration(result.wall_time_s)}",
        wrote=[paths.TRAINED_MODEL, paths.TRAIN_METRICS, paths.TRAIN_HISTORY, paths.STAGE_RUNS["train"]],
        look=console.views(store.tracking_uri, run_id),
    )
    return metrics
