"""The ``split`` stage: the train/val/test split of the fetched dataset into data/split.json.

A COCO dataset's own split is taken as it ships; otherwise the split is drawn with
``data.split.seed`` (stratified by category for a COCO dataset).
"""

from __future__ import annotations

from pedtune import console, paths
from pedtune.config.schema import StudyConfig
from pedtune.data.checksum import dataset_hash
from pedtune.data.coco_fetch import is_coco_layout, read_dataset
from pedtune.data.split import Split, make_split, write_split
from pedtune.data.validation import validate_dataset

log = console.get(__name__)


def run_split(config: StudyConfig) -> None:
    if is_coco_layout(paths.DATA_ROOT):
        split, how = coco_split(config)
    else:
        summary = validate_dataset(paths.DATA_ROOT)
        split, how = make_split(list(summary.stems), config.data.split), f"seed {config.data.split.seed}"
    write_split(split, paths.SPLIT_FILE, config.data.split, dataset_hash(paths.DATA_ROOT))
    console.summary(log, f"train {len(split.train)}, val {len(split.val)}, test {len(split.test)} images "
                         f"({how})", wrote=[paths.SPLIT_FILE])


def coco_split(config: StudyConfig) -> tuple[Split, str]:
    """The dataset's own split if it ships one, else a seeded one covering every category."""
    dataset = read_dataset(paths.DATA_ROOT)
    entries = dataset.entries()
    categories = {key: index.image_categories(image.id) for key, (index, image) in entries.items()}
    keep = {key for key, found in categories.items() if found or not config.data.drop_negatives}
    dropped = f", {len(categories) - len(keep)} images without objects left out" if len(keep) < len(categories) else ""
    shipped = dataset.shipped_split
    if shipped is not None:
        log.info("the dataset ships its own split (data.annotations: train, val, test): taken as it is; "
                 "data.split's fractions and seed are not used")
        split = Split(**{name: tuple(key for key in shipped.part(name) if key in keep)
                         for name in ("train", "val", "test")})
        return split, "the dataset's own split" + dropped
    split = make_split(sorted(keep), config.data.split, {key: categories[key] for key in keep})
    return split, f"seed {config.data.split.seed}, stratified by category{dropped}"
