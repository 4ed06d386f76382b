from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pedtune.config.schema import SyntheticConfig
from pedtune.data.synthetic import write_synthetic_dataset
from pedtune.data.validation import validate_dataset
from pedtune.errors import DataError

BOX_RE = re.compile(
    r'Bounding box for object (\d+) "PASpersonWalking" \(Xmin, Ymin\) - \(Xmax, Ymax\) : '
    r"\((\d+), (\d+)\) - \((\d+), (\d+)\)"
)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _parse_annotation(path: Path) -> tuple[tuple[int, int], int, dict[int, tuple[int, int, int, int]]]:
    text = path.read_bytes().decode("ascii")
    size = re.search(r"Image size \(X x Y x C\) : (\d+) x (\d+) x 3", text)
    count = re.search(r"Objects with ground truth : (\d+) \{", text)
    assert size and count
    boxes = {int(m[1]): (int(m[2]), int(m[3]), int(m[4]), int(m[5])) for m in BOX_RE.finditer(text)}
    return (int(size[1]), int(size[2])), int(count[1]), boxes


def test_same_config_gives_byte_identical_files(tmp_path: Path, synthetic_cfg: SyntheticConfig) -> None:
    write_synthetic_dataset(synthetic_cfg, tmp_path / "a")
    write_synthetic_dataset(synthetic_cfg, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b
    assert len(a) == 3 * synthetic_cfg.num_images + 2  # + readme.txt, added-object-list.txt


def test_other_seed_gives_other_images(tmp_path: Path, synthetic_cfg: SyntheticConfig) -> None:
    write_synthetic_dataset(synthetic_cfg, tmp_path / "a")
    write_synthetic_dataset(synthetic_cfg.model_copy(update={"seed": 1}), tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "b")


def test_layout_names_and_modes(synthetic_root: Path, synthetic_cfg: SyntheticConfig) -> None:
    stems = sorted(p.stem for p in (synthetic_root / "PNGImages").glob("*.png"))
    assert stems == ["FudanPed00001", "FudanPed00002", "FudanPed00003", "PennPed00001", "PennPed00002", "PennPed00003"]
    assert (synthetic_root / "readme.txt").is_file()
    for stem in stems:
        with Image.open(synthetic_root / "PNGImages" / f"{stem}.png") as im:
            assert (im.mode, im.size) == ("RGB", (synthetic_cfg.width, synthetic_cfg.height))
        with Image.open(synthetic_root / "PedMasks" / f"{stem}_mask.png") as m:
            assert (m.mode, m.size) == ("L", (synthetic_cfg.width, synthetic_cfg.height))
        raw = (synthetic_root / "Annotation" / f"{stem}.txt").read_bytes()
        assert raw.count(b"\r\n") == raw.count(b"\n")  # CRLF everywhere, as in the real data


def test_annotation_boxes_equal_mask_extents(synthetic_root: Path, synthetic_cfg: SyntheticConfig) -> None:
    saw_several = False
    for mask_path in sorted((synthetic_root / "PedMasks").glob("*.png")):
        stem = mask_path.name.removesuffix("_mask.png")
        mask = np.asarray(Image.open(mask_path))
        size, count, boxes = _parse_annotation(synthetic_root / "Annotation" / f"{stem}.txt")
        ids = sorted(int(v) for v in np.unique(mask) if v)

        assert size == (synthetic_cfg.width, synthetic_cfg.height)
        assert 1 <= count <= synthetic_cfg.max_instances
        assert ids == list(range(1, count + 1))  # contiguous ids 1..N
        assert sorted(boxes) == ids
        saw_several |= count > 1
        for k in ids:
            ys, xs = np.nonzero(mask == k)
            extent = (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)  # 1-based inclusive
            assert boxes[k] == extent, f"{stem} object {k}"
            height = ys.max() - ys.min() + 1
            assert height >= 12 and height > xs.max() - xs.min() + 1  # tall, like a person
    assert saw_several


def test_people_do_not_overlap(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_images=8, height=96, width=128, max_instances=6, seed=3)
    write_synthetic_dataset(cfg, tmp_path / "ds")
    for ann in (tmp_path / "ds" / "Annotation").glob("*.txt"):
        _, _, boxes = _parse_annotation(ann)
        items = list(boxes.values())
        for i, (ax0, ay0, ax1, ay1) in enumerate(items):
            for bx0, by0, bx1, by1 in items[i + 1 :]:
                assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0, ann.name


def test_synthetic_validates(synthetic_root: Path, synthetic_cfg: SyntheticConfig) -> None:
    summary = validate_dataset(synthetic_root, expected_count=synthetic_cfg.num_images)
    assert summary.num_images == synthetic_cfg.num_images
    assert synthetic_cfg.num_images <= summary.num_instances <= synthetic_cfg.num_images * synthetic_cfg.max_instances


def test_refuses_non_empty_root(synthetic_root: Path, synthetic_cfg: SyntheticConfig) -> None:
    with pytest.raises(DataError, match="non-empty"):
        write_synthetic_dataset(synthetic_cfg, synthetic_root)
