"""Small generated COCO datasets for the tests of ``data.format: coco``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pedtune.config.schema import DataConfig, SyntheticConfig
from pedtune.data.coco_synthetic import write_synthetic_coco

# 3 categories; polygons, compressed and uncompressed RLE, a crowd region, negatives, a greyscale
# and an RGBA image (pedtune.data.coco_synthetic's layout).
TINY = SyntheticConfig(num_images=20, height=64, width=80, max_instances=3, seed=0, categories=3)


def write_coco(root: Path, cfg: SyntheticConfig = TINY) -> tuple[Path, Path]:
    """``(images folder, annotation file)`` of a generated dataset under ``root``."""
    annotation = write_synthetic_coco(cfg, root)
    return root / "images", annotation


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def save(path: Path, raw: dict[str, Any]) -> None:
    path.write_text(json.dumps(raw), encoding="utf-8")


def dir_config(images: Path, annotations: Any, **changes: Any) -> DataConfig:
    return DataConfig(format="coco", source="dir", local_path=str(images), annotations=annotations,
                      expected_images=None, **changes)
