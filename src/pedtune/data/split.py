"""One deterministic train/val/test split, drawn once and shared by every stage and trial."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pedtune.config.schema import SplitConfig
from pedtune.errors import DataError
from pedtune.io import write_json

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def part(self, name: str) -> tuple[str, ...]:
        if name == "train+val":
            return self.train + self.val
        if name not in PARTS:
            raise ValueError(f"unknown split part {name!r}")
        return getattr(self, name)


# Each collection's parts are rounded on their own: below this size that rounding distorts the
# fractions more than stratifying helps (PennFudanPed's collections hold 74 and 96 images).
MIN_COLLECTION = 20


def _source(stem: str) -> str:
    # "FudanPed00001" -> "FudanPed": the two collections differ in look, so each part gets both.
    return stem.rstrip("0123456789")


def _collections(stems: list[str]) -> dict[str, list[str]]:
    """Stems by collection; all in one when any collection is small (another naming scheme, say)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for stem in sorted(stems):
        groups[_source(stem)].append(stem)
    if min(len(members) for members in groups.values()) < MIN_COLLECTION:
        return {"": sorted(stems)}
    return groups


def make_split(stems: list[str], cfg: SplitConfig, categories: Mapping[str, set[int]] | None = None) -> Split:
    """Stratified by collection (Fudan/Penn), seeded: the same stems and cfg give the same split.

    With ``categories`` (each stem's object categories), images are then swapped between
    parts, pairwise so the part sizes stay, until every category in at least three images
    appears in every part; a dataset where every image holds the one category keeps the split
    as drawn.
    """
    if not stems:
        raise DataError("no images to split")
    rng = np.random.default_rng(cfg.seed)
    groups = _collections(stems)
    parts: dict[str, list[str]] = {name: [] for name in PARTS}
    for source in sorted(groups):
        members = [groups[source][i] for i in rng.permutation(len(groups[source]))]
        n_val = max(1, round(len(members) * cfg.val))  # every part gets an image, as its fraction is > 0
        n_test = max(1, round(len(members) * cfg.test))
        parts["test"] += members[:n_test]
        parts["val"] += members[n_test : n_test + n_val]
        parts["train"] += members[n_test + n_val :]
    for name in PARTS:
        if not parts[name]:
            raise DataError(f"the {name} split is empty: {len(stems)} images are too few for these fractions")
    if categories is not None:
        _cover_categories(parts, categories, rng)
    return Split(**{name: tuple(sorted(parts[name])) for name in PARTS})


def _holders(members: list[str], categories: Mapping[str, set[int]], category: int) -> list[str]:
    return [stem for stem in members if category in categories.get(stem, set())]


def _cover_categories(parts: dict[str, list[str]], categories: Mapping[str, set[int]],
                      rng: np.random.Generator) -> None:
    """Swap images so each category held by >= 3 images appears in every part (in place)."""
    every = sorted(set().union(*categories.values())) if categories else []
    for category in every:
        if sum(len(_holders(parts[name], categories, category)) for name in PARTS) < len(PARTS):
            continue  # too rare to be everywhere
        for lacking in PARTS:
            if _holders(parts[lacking], categories, category):
                continue
            # Take a holder from the part with the most of them (it keeps at least one), giving
            # back an image of the lacking part whose categories the lacking part keeps anyway,
            # and whose move leaves the donor part every category the holder took away.
            donor = max((name for name in PARTS if name != lacking),
                        key=lambda name: len(_holders(parts[name], categories, category)))
            holders = _holders(parts[donor], categories, category)
            swap = _find_swap(parts, categories, donor, lacking, holders, rng)
            if swap is None:
                continue
            given, taken = swap
            parts[donor].remove(given)
            parts[lacking].remove(taken)
            parts[donor].append(taken)
            parts[lacking].append(given)


def _present(members: list[str], categories: Mapping[str, set[int]]) -> set[int]:
    return set().union(*(categories.get(stem, set()) for stem in members)) if members else set()


def _find_swap(parts: dict[str, list[str]], categories: Mapping[str, set[int]], donor: str, lacking: str,
               holders: list[str], rng: np.random.Generator) -> tuple[str, str] | None:
    before = {name: _present(parts[name], categories) for name in (donor, lacking)}
    for given in [holders[i] for i in rng.permutation(len(holders))]:
        for taken in [parts[lacking][i] for i in rng.permutation(len(parts[lacking]))]:
            donor_after = [s for s in parts[donor] if s != given] + [taken]
            lacking_after = [s for s in parts[lacking] if s != taken] + [given]
            if before[donor] <= _present(donor_after, categories) and \
                    before[lacking] <= _present(lacking_after, categories):
                return given, taken
    return None


def write_split(split: Split, path: Path, cfg: SplitConfig, dataset_hash: str) -> None:
    write_json(
        path,
        {
            "seed": cfg.seed,
            "fractions": {"train": cfg.train, "val": cfg.val, "test": cfg.test},
            "dataset_hash": dataset_hash,
            "counts": {name: len(getattr(split, name)) for name in PARTS},
            **{name: list(ids) for name, ids in asdict(split).items()},
        },
    )


def read_split(path: Path) -> tuple[Split, str]:
    """The split and the hash of the dataset it was drawn from."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        split = Split(**{name: tuple(raw[name]) for name in PARTS})
    except FileNotFoundError:
        raise DataError(f"{path} not found: run the split stage first (dvc repro split)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not a valid split file: {error}") from None
    seen: set[str] = set()
    for name in PARTS:
        overlap = seen.intersection(split.part(name))
        if overlap:
            raise DataError(f"{path}: {sorted(overlap)[:3]} appear in more than one split part")
        seen.update(split.part(name))
    return split, str(raw.get("dataset_hash", ""))
