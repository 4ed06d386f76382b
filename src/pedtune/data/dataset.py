"""Samples (PennFudanPed's or a COCO dataset's) as ``tv_tensors`` for torchvision's detection models.

Decoding a PNG and splitting its instance mask costs about as much as a forward pass of
the light model at 320 px, so samples are decoded once, resized to the size the model
will see, and (with ``data.cache``) kept in memory; the per-step work is only the
random flip and the float conversion. Which reader decodes depends on what the fetch stage
laid out: PennFudanPed's folders (here) or a COCO dataset (:mod:`pedtune.data.coco_samples`).
Scores are computed against each image's original annotations (:meth:`SampleSet.truth`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_png, read_file
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2

from pedtune import console
from pedtune.data.coco_samples import CocoReader
from pedtune.data.index import DatasetIndex, index_folder
from pedtune.data.sample import Decoded, Sample, resized
from pedtune.errors import DataError

log = console.get(__name__)


def image_path(root: Path, stem: str) -> Path:
    return root / "PNGImages" / f"{stem}.png"


def mask_path(root: Path, stem: str) -> Path:
    return root / "PedMasks" / f"{stem}_mask.png"


def list_stems(root: Path) -> list[str]:
    stems = sorted(p.stem for p in (root / "PNGImages").glob("*.png"))
    if not stems:
        raise DataError(f"no images found in {root / 'PNGImages'}")
    return stems


def _decode(path: Path, mode: ImageReadMode) -> torch.Tensor:
    try:
        return decode_png(read_file(str(path)), mode=mode)
    except (RuntimeError, OSError) as error:
        raise DataError(f"cannot decode {path}: {error}") from None


def decode_pennfudan(root: Path, stem: str) -> Decoded:
    image = _decode(image_path(root, stem), ImageReadMode.RGB)
    # UNCHANGED keeps the stored values: a palette ("P") mask's indices are its instance ids,
    # which GRAY would turn into the brightness of their palette colours.
    instance_map = _decode(mask_path(root, stem), ImageReadMode.UNCHANGED)
    if instance_map.shape[0] == 2:  # grey + alpha: the ids are the grey channel
        instance_map = instance_map[:1]
    if instance_map.shape[0] != 1:
        raise DataError(
            f"{mask_path(root, stem)}: mask has {instance_map.shape[0]} channels; expected one channel of instance ids"
        )
    if image.shape[1:] != instance_map.shape[1:]:
        raise DataError(
            f"{mask_path(root, stem)}: mask size {tuple(instance_map.shape[1:])} "
            f"differs from image size {tuple(image.shape[1:])}"
        )
    ids = instance_map.unique()
    ids = ids[ids != 0]
    masks = instance_map[0] == ids[:, None, None]
    return Decoded(image=image, masks=masks, labels=torch.ones(len(masks), dtype=torch.int64))


def load_sample(root: Path, stem: str, min_size: int, max_size: int) -> Sample:
    return resized(stem, decode_pennfudan(root, stem), min_size, max_size)


def truth_from_masks(masks: torch.Tensor, labels: torch.Tensor) -> list[dict[str, Any]]:
    """COCO ground-truth entries (no ids) of instance masks: box as :attr:`Sample.boxes` draws it, RLE mask."""
    from pycocotools import mask as mask_utils  # noqa: PLC0415 - only scoring needs it

    annotations = []
    boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0]) if len(masks) else torch.zeros((0, 4))
    for box, mask, label in zip(boxes.tolist(), masks.numpy(), labels.tolist()):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append({"category_id": int(label), "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "area": float(mask.sum()), "segmentation": rle, "iscrowd": 0})
    return annotations


class Reader(Protocol):
    """Decodes one dataset layout; picklable (stores travel to DataLoader workers and Ray trials)."""

    categories: dict[int, str]  # label (1..K) -> name

    def missing(self, stems: Sequence[str]) -> list[str]: ...

    def sample(self, stem: str, min_size: int, max_size: int) -> Sample: ...

    def truth(self, stem: str) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        """(height, width) of the image file and its ground truth there, as COCO annotations."""
        ...


class PennFudanReader:
    def __init__(self, root: Path, index: DatasetIndex) -> None:
        self.root = Path(root)
        self.keys = frozenset(index.images)
        self.categories = index.labels

    def missing(self, stems: Sequence[str]) -> list[str]:
        return [stem for stem in stems if stem not in self.keys]

    def sample(self, stem: str, min_size: int, max_size: int) -> Sample:
        return load_sample(self.root, stem, min_size, max_size)

    def truth(self, stem: str) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        decoded = decode_pennfudan(self.root, stem)
        return (int(decoded.image.shape[1]), int(decoded.image.shape[2])), truth_from_masks(decoded.masks,
                                                                                           decoded.labels)


def reader_for(root: Path, index: DatasetIndex | None = None) -> Reader:
    """The reader of the dataset the fetch stage laid out at ``root``, whose index it wrote (the stages
    pass :func:`pedtune.data.index.read_index`'s); without ``index`` the folder is checked and indexed."""
    index = index if index is not None else index_folder(root)
    if index.format == "coco":
        return CocoReader(root, index)
    return PennFudanReader(root, index)


class SampleSet:
    """Decoded samples of some stems, held in memory when ``cache`` is on (picklable)."""

    def __init__(
        self, root: Path, stems: Sequence[str], min_size: int, max_size: int, cache: bool = True,
        reader: Reader | None = None,
    ) -> None:
        self.root, self.stems = Path(root), list(stems)
        self.min_size, self.max_size, self.cache = min_size, max_size, cache
        self.reader = reader if reader is not None else reader_for(self.root)
        missing = self.reader.missing(self.stems)
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataError(f"the split names images the dataset at {self.root} lacks: {missing[0]}{more} "
                            "(a split drawn from another dataset? run the split stage again: dvc repro split)")
        self._samples: dict[int, Sample] = {}
        self._truths: dict[int, tuple[tuple[int, int], list[dict[str, Any]]]] = {}

    @property
    def categories(self) -> dict[int, str]:
        return self.reader.categories

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> Sample:
        sample = self._samples.get(index)
        if sample is None:
            sample = self.reader.sample(self.stems[index], self.min_size, self.max_size)
            if self.cache:
                self._samples[index] = sample
        return sample

    def truth(self, index: int) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        """The image's size and ground truth where it is scored: the image file's, not the resized sample's.

        Held with the samples when caching is on: a trial or run on another Ray node scores against
        it there, where the dataset's files are not.
        """
        truth = self._truths.get(index)
        if truth is None:
            truth = self.reader.truth(self.stems[index])
            if self.cache:
                self._truths[index] = truth
        return truth

    def preload(self, label: str = "", scored: bool = False) -> "SampleSet":
        """Decode everything now, in this process, so DataLoader workers (and Ray nodes) inherit the
        cache; ``scored``: the ground truth too, for a part that is scored."""
        if self.cache:
            for index in range(len(self)):
                self[index]
                if scored:
                    self.truth(index)
            if label:
                log.info(f"{label}: {len(self)} images decoded and cached")
        return self


def to_target(sample: Sample, image_id: int) -> dict[str, torch.Tensor]:
    size = tuple(sample.image.shape[1:])
    return {
        "boxes": tv_tensors.BoundingBoxes(sample.boxes, format="XYXY", canvas_size=size),
        "masks": tv_tensors.Mask(sample.masks.to(torch.uint8)),
        "labels": sample.labels,
        "image_id": torch.tensor(image_id),
        # Where predictions are mapped back to before scoring (engine.train.iter_predictions).
        "original_size": torch.tensor(sample.original_size),
    }


class DetectionDataset(Dataset):
    """``(image, target)`` pairs in the format torchvision's detection models train on."""

    def __init__(self, samples: SampleSet, hflip_prob: float = 0.0) -> None:
        self.samples = samples
        steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]
        if hflip_prob > 0:
            steps.insert(0, v2.RandomHorizontalFlip(p=hflip_prob))
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sample = self.samples[index]
        image = tv_tensors.Image(sample.image)
        return self.transform(image, to_target(sample, index))


def collate(batch: list) -> tuple:
    return tuple(zip(*batch))


def open_samples(root: Path, stems: Sequence[str], min_size: int, max_size: int, cache: bool, label: str,
                 scored: bool = False) -> SampleSet:
    """The samples of ``stems`` with everything decoded up front when caching is on (``scored``: their
    ground truth too)."""
    return SampleSet(root, stems, min_size, max_size, cache).preload(label, scored)
