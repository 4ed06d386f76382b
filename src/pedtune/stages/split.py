"""The ``split`` stage: the train/val/test split of the fetched dataset into data/split.json.

It reads only the dataset's index (data/index.json, written by the fetch stage). A COCO
dataset's own split is taken as it ships; otherwise the split is drawn with
``data.split.seed`` (stratified by category for a COCO dataset).
"""

from __future__ import annotations

from pedtune import console, paths
from pedtune.config.schema import StudyConfig
from pedtune.data.index import DatasetIndex, read_index
from pedtune.data.split import PARTS, Split, make_split, write_split

log = console.get(__name__)


def run_split(config: StudyConfig) -> None:
    index = read_index(paths.DATA_INDEX)
    if index.format == "coco":
        split, how = coco_split(config, index)
    else:
        split, how = make_split(list(index.images), config.data.split), f"seed {config.data.split.seed}"
    write_split(split, paths.SPLIT_FILE, config.data.split, index.dataset_hash)
    console.summary(log, f"train {len(split.train)}, val {len(split.val)}, test {len(split.test)} images "
                         f"({how})", wrote=[paths.SPLIT_FILE])


def coco_split(config: StudyConfig, index: DatasetIndex) -> tuple[Split, str]:
    """The dataset's own split if it ships one, else a seeded one covering every category."""
    categories = {key: set(image.categories) for key, image in index.images.items()}
    keep = {key for key, found in categories.items() if found or not config.data.drop_negatives}
    dropped = f", {len(categories) - len(keep)} images without objects left out" if len(keep) < len(categories) else ""
    shipped = index.shipped_split
    if shipped is not None:
        log.info("the dataset ships its own split (data.annotations: train, val, test): taken as it is; "
                 "data.split's fractions and seed are not used")
        split = Split(**{name: tuple(key for key in shipped.part(name) if key in keep) for name in PARTS})
        return split, "the dataset's own split" + dropped
    split = make_split(sorted(keep), config.data.split, {key: categories[key] for key in keep})
    return split, f"seed {config.data.split.seed}, stratified by category{dropped}"
