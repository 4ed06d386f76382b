"""The ``fetch`` and ``split`` stages."""

from __future__ import annotations

from pedtune import console, paths
from pedtune.config.schema import StudyConfig
from pedtune.data.fetch import dataset_hash, fetch_dataset, validate_dataset
from pedtune.data.split import make_split, write_split

log = console.get(__name__)


def run_fetch(config: StudyConfig) -> None:
    summary = fetch_dataset(config.data, paths.DATA_ROOT, work_dir=paths.DATA_DOWNLOADS)
    console.summary(log, f"dataset ready: {summary.num_images} images, {summary.num_instances} pedestrians "
                         f"(source: {config.data.source})", wrote=[paths.DATA_ROOT])


def run_split(config: StudyConfig) -> None:
    summary = validate_dataset(paths.DATA_ROOT)
    split = make_split(list(summary.stems), config.data.split)
    write_split(split, paths.SPLIT_FILE, config.data.split, dataset_hash(paths.DATA_ROOT))
    console.summary(log, f"train {len(split.train)}, val {len(split.val)}, test {len(split.test)} images "
                         f"(seed {config.data.split.seed})", wrote=[paths.SPLIT_FILE])
