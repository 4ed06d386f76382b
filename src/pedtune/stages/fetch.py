"""The ``fetch`` stage: the dataset (PennFudanPed or COCO format) from ``data.source`` into data/PennFudanPed, validated."""

from __future__ import annotations

from pedtune import console, paths
from pedtune.config.schema import StudyConfig
from pedtune.data.fetch import fetch_dataset

log = console.get(__name__)


def run_fetch(config: StudyConfig) -> None:
    summary = fetch_dataset(config.data, paths.DATA_ROOT, work_dir=paths.DATA_DOWNLOADS)
    objects = "objects" if config.data.format == "coco" else "pedestrians"
    console.summary(log, f"dataset ready: {summary.num_images} images, {summary.num_instances} {objects} "
                         f"(source: {config.data.source})", wrote=[paths.DATA_ROOT])
