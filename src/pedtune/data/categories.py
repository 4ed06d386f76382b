"""The dataset's category ids of the model's labels 1..K.

Training labels are contiguous (1..K, in ascending category id: :mod:`pedtune.data.coco_samples`);
a model's predictions are reported in the ids of the dataset it learnt from.
"""

from __future__ import annotations

from pathlib import Path

from pedtune.data.coco_fetch import is_coco_layout, read_dataset


def category_ids(root: Path) -> dict[int, int]:
    """label -> category id for the dataset the fetch stage laid out at ``root`` (PennFudanPed: person, 1)."""
    if is_coco_layout(root):
        return {label: category for label, category in enumerate(read_dataset(root).categories, start=1)}
    return {1: 1}
