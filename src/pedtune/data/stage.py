"""The ``fetch`` and ``split`` stages."""

from __future__ import annotations

import sys

from pedtune import paths
from pedtune.config.schema import StudyConfig
from pedtune.data.fetch import dataset_hash, fetch_dataset, validate_dataset
from pedtune.data.split import make_split, write_split


def run_fetch(config: StudyConfig) -> None:
    summary = fetch_dataset(config.data, paths.DATA_ROOT, work_dir=paths.DATA_DOWNLOADS)
    print(
        f"[fetch] {paths.DATA_ROOT}: {summary.num_images} images, {summary.num_instances} pedestrians",
        file=sys.stderr,
    )


def run_split(config: StudyConfig) -> None:
    summary = validate_dataset(paths.DATA_ROOT)
    split = make_split(list(summary.stems), config.data.split)
    write_split(split, paths.SPLIT_FILE, config.data.split, dataset_hash(paths.DATA_ROOT))
    print(
        f"[split] {paths.SPLIT_FILE}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)} "
        f"(seed {config.data.split.seed})",
        file=sys.stderr,
    )
