"""The images ``pedtune predict`` reads: files, folders and glob patterns, decoded in a DataLoader.

An image that cannot be decoded is not an error here: it comes back with the reason, and the
caller lists it and goes on with the others.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, read_file

from pedtune.errors import DataError

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def collect_images(specs: Sequence[str]) -> list[Path]:
    """Every image ``specs`` name (a file, a folder's images, or a glob pattern), in order, each once."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        else:
            raise DataError(f"{spec}: no such file or folder")
        if not matches:
            raise DataError(f"{spec}: no images there (looked for {', '.join(SUFFIXES)})")
        found.extend(matches)
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Decoded:
    index: int
    path: Path
    image: torch.Tensor | None  # uint8 [3, H, W]; None when the file could not be decoded
    error: str | None = None


class ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Decoded:
        path = self.paths[index]
        try:
            return Decoded(index, path, decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
        except (RuntimeError, OSError, ValueError) as error:
            return Decoded(index, path, None, str(error).strip().splitlines()[0] or type(error).__name__)


def image_batches(paths: Sequence[Path], batch_size: int, num_workers: int) -> DataLoader:
    """Batches (lists) of :class:`Decoded`, decoded in ``num_workers`` processes."""
    return DataLoader(ImageFiles(paths), batch_size=batch_size, num_workers=num_workers, collate_fn=list)
