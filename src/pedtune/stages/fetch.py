"""The ``fetch`` stage: the dataset (PennFudanPed or COCO format) from ``data.source`` into data/dataset,
validated, and what the checks found into data/index.json (what the later stages read)."""

from __future__ import annotations

from pedtune import console, paths
from pedtune.config.schema import StudyConfig
from pedtune.data.fetch import fetch_dataset

log = console.get(__name__)


def run_fetch(config: StudyConfig) -> None:
    index = fetch_dataset(config.data, paths.DATA_ROOT, work_dir=paths.DATA_DOWNLOADS, index_file=paths.DATA_INDEX)
    objects = "objects" if config.data.format == "coco" else "pedestrians"
    console.summary(log, f"dataset ready: {index.num_images} images, {index.num_instances} {objects} "
                         f"(source: {config.data.source})", wrote=[paths.DATA_ROOT, paths.DATA_INDEX])
