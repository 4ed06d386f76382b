"""The resize factor torchvision's detection transform applies: torch-free, so `pedtune check` can size a workload without importing torchvision."""

from __future__ import annotations


def scale_for(height: int, width: int, min_size: int, max_size: int) -> float:
    """The factor GeneralizedRCNNTransform would resize by (so it leaves our samples as they are)."""
    return min(min_size / min(height, width), max_size / max(height, width))
