"""The ``split`` stage: the seeded train/val/test split of the fetched dataset into data/split.json."""

from __future__ import annotations

from pedtune import console, paths
from pedtune.config.schema import StudyConfig
from pedtune.data.checksum import dataset_hash
from pedtune.data.split import make_split, write_split
from pedtune.data.validation import validate_dataset

log = console.get(__name__)


def run_split(config: StudyConfig) -> None:
    summary = validate_dataset(paths.DATA_ROOT)
    split = make_split(list(summary.stems), config.data.split)
    write_split(split, paths.SPLIT_FILE, config.data.split, dataset_hash(paths.DATA_ROOT))
    console.summary(log, f"train {len(split.train)}, val {len(split.val)}, test {len(split.test)} images "
                         f"(seed {config.data.split.seed})", wrote=[paths.SPLIT_FILE])
