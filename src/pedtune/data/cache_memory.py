"""What ``data.cache`` will hold in memory, stated before it is filled and held to ``data.cache_budget_gib``.

A cached sample is its image (3 bytes a pixel) and one byte a pixel per instance mask, at the
size the model sees it (:func:`pedtune.data.scale.scale_for`), so the estimate needs only each
image's size and instance count, which the dataset's index holds (:mod:`pedtune.data.index`).
The ground truth kept for scoring (polygons and RLE strings) is left out: it is small beside
the pixels. The budget is checked against the whole split, which bounds what any
one process holds (a stage, or each running Tune trial, which gets its own copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pedtune import paths
from pedtune.config.schema import DataConfig, ModelConfig, StudyConfig
from pedtune.data.index import DatasetIndex, read_index
from pedtune.data.scale import scale_for
from pedtune.data.split import read_split
from pedtune.errors import DataError
from pedtune.units import memory

GIB = 1024**3


def sample_bytes(height: int, width: int, instances: int, min_size: int, max_size: int) -> int:
    """Bytes of one cached sample: the uint8 RGB image and its bool masks, resized as the dataset resizes."""
    scale = scale_for(height, width, min_size, max_size)
    pixels = max(1, round(height * scale)) * max(1, round(width * scale))
    return (3 + instances) * pixels


@dataclass(frozen=True)
class CacheFootprint:
    """The estimated memory of ``images`` cached samples at ``min_size``-``max_size`` px."""

    images: int
    num_bytes: int
    min_size: int
    max_size: int
    at_most: bool = False  # an upper bound (generated data, instance counts not yet drawn)

    def describe(self) -> str:
        bound = "at most" if self.at_most else "about"
        per_image = self.num_bytes / max(1, self.images)
        return (f"data.cache: {self.images} images decoded at {self.min_size}-{self.max_size} px take {bound} "
                f"{memory(self.num_bytes)} in memory ({memory(per_image)} per image)")

    def check(self, budget_gib: float | None) -> str:
        """The statement to log, with the budget; raises :class:`DataError` when it is exceeded."""
        if budget_gib is None:
            return f"{self.describe()}, no budget set (data.cache_budget_gib: null)"
        budget = f"data.cache_budget_gib: {budget_gib:g}"
        if self.num_bytes > budget_gib * GIB:
            raise DataError(f"{self.describe()}, more than {budget}; set data.cache: false (images are then decoded "
                            "in the DataLoader workers, data.num_workers), lower model.min_size/max_size, or raise "
                            "data.cache_budget_gib if this machine has the memory")
        return f"{self.describe()}, within {budget}"


def cache_footprint(index: DatasetIndex, stems: Sequence[str], min_size: int, max_size: int) -> CacheFootprint:
    """The memory caching ``stems`` will take, from their sizes and instance counts (no image decoded)."""
    missing = [stem for stem in stems if stem not in index.images]
    if missing:
        raise DataError(f"the split names {len(missing)} images the dataset's index lacks, {missing[0]} first "
                        "(a split drawn from another dataset? run the split stage again: dvc repro split)")
    images = [index.images[stem] for stem in stems]
    total = sum(sample_bytes(image.height, image.width, image.objects, min_size, max_size) for image in images)
    return CacheFootprint(len(stems), total, min_size, max_size)


def synthetic_footprint(data: DataConfig, model: ModelConfig) -> CacheFootprint:
    """Before a synthetic dataset is generated: every image at its configured size with the most instances."""
    syn = data.synthetic
    one = sample_bytes(syn.height, syn.width, syn.max_instances, model.min_size, model.max_size)
    return CacheFootprint(syn.num_images, one * syn.num_images, model.min_size, model.max_size, at_most=True)


def planned_footprint(config: StudyConfig, split_file: Path = paths.SPLIT_FILE,
                      index_file: Path = paths.DATA_INDEX) -> CacheFootprint | None:
    """What the training stages will cache: the fetched dataset's split where it is there, a generated
    dataset's upper bound before its fetch; None when nothing tells yet (another dataset, not fetched)."""
    model = config.model
    if split_file.is_file() and index_file.is_file():
        split, _ = read_split(split_file)
        stems = split.train + split.val + split.test
        return cache_footprint(read_index(index_file), stems, model.min_size, model.max_size)
    if config.data.source == "synthetic":
        return synthetic_footprint(config.data, model)
    return None


def cache_statement(config: StudyConfig, split_file: Path = paths.SPLIT_FILE,
                    index_file: Path = paths.DATA_INDEX) -> str:
    """``pedtune check``'s line on ``data.cache``; raises :class:`DataError` over the budget."""
    if not config.data.cache:
        return "data.cache: off (each image decoded in the DataLoader workers, every epoch)"
    footprint = planned_footprint(config, split_file, index_file)
    if footprint is None:
        return (f"data.cache: the memory it takes is known once the dataset is fetched and split "
                f"(dvc repro split, then pedtune check again); budget data.cache_budget_gib: "
                f"{config.data.cache_budget_gib}")
    return footprint.check(config.data.cache_budget_gib)
