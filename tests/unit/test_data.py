from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from pedtune.config.schema import SplitConfig
from pedtune.data.dataset import DetectionDataset, SampleSet, list_stems, load_sample, open_samples
from pedtune.data.scale import scale_for
from pedtune.data.split import make_split, read_split, write_split
from pedtune.errors import DataError


def test_samples_are_resized_to_the_model_scale_with_boxes_from_masks(synthetic_root: Path):
    stem = list_stems(synthetic_root)[0]
    sample = load_sample(synthetic_root, stem, min_size=96, max_size=200)
    height, width = sample.image.shape[1:]
    assert min(height, width) == 96  # synthetic images are 48x64: doubled
    assert sample.masks.shape[1:] == (height, width) and sample.masks.dtype == torch.bool
    assert len(sample.masks) >= 1
    expected = masks_to_boxes(sample.masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(sample.boxes, expected)
    assert (sample.boxes[:, 2:] > sample.boxes[:, :2]).all()
    assert scale_for(height, width, 96, 200) == pytest.approx(1.0, abs=0.02)


def test_flipped_training_samples_keep_boxes_on_their_masks(synthetic_store: SampleSet):
    dataset = DetectionDataset(synthetic_store, hflip_prob=1.0)
    image, target = dataset[0]
    assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0
    recomputed = masks_to_boxes(target["masks"].bool()) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(target["boxes"].as_subclass(torch.Tensor), recomputed)
    unflipped = synthetic_store[0].masks
    assert torch.equal(target["masks"].bool(), unflipped.flip(-1))
    assert target["labels"].tolist() == [1] * len(unflipped)


def test_cache_decodes_each_image_once(synthetic_root: Path, monkeypatch):
    store = SampleSet(synthetic_root, list_stems(synthetic_root), 48, 64, cache=True).preload()
    monkeypatch.setattr("pedtune.data.dataset.load_sample", lambda *a: pytest.fail("decoded again"))
    assert all(store[i].stem for i in range(len(store)))


def test_truncated_png_is_named(synthetic_root: Path):
    stem = list_stems(synthetic_root)[0]
    path = synthetic_root / "PNGImages" / f"{stem}.png"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=stem):
        load_sample(synthetic_root, stem, 48, 64)


STEMS = [f"FudanPed{i:05d}" for i in range(1, 75)] + [f"PennPed{i:05d}" for i in range(1, 97)]


def test_split_is_deterministic_disjoint_complete_and_stratified():
    cfg = SplitConfig(train=0.7, val=0.15, test=0.15, seed=7)
    first, second = make_split(STEMS, cfg), make_split(list(reversed(STEMS)), cfg)
    assert first == second
    parts = [set(first.train), set(first.val), set(first.test)]
    assert sum(map(len, parts)) == len(STEMS) and set().union(*parts) == set(STEMS)
    assert len(first.test) == len(first.val) == 11 + 14  # round(0.15 * 74) + round(0.15 * 96)
    for part in (first.val, first.test):
        assert any(s.startswith("Fudan") for s in part) and any(s.startswith("Penn") for s in part)
    assert make_split(STEMS, cfg.model_copy(update={"seed": 8})) != first


@pytest.mark.parametrize(
    ("stems", "counts"),
    [
        # Names that do not end in digits: each was a collection of one, and all went to train.
        ([f"cam{c}_{i:04d}_rgb" for c in range(4) for i in range(50)], (140, 30, 30)),
        # Ten small collections, rounded one by one, gave 30/10/10.
        ([f"site{chr(97 + c)}{i:03d}" for c in range(10) for i in range(5)], (34, 8, 8)),
        # The smallest synthetic dataset params.yaml admits (data.synthetic.num_images >= 3).
        (["FudanPed00001", "PennPed00001", "FudanPed00002"], (1, 1, 1)),
    ],
)
def test_datasets_of_other_shapes_get_the_configured_fractions(stems, counts):
    split = make_split(stems, SplitConfig())
    assert (len(split.train), len(split.val), len(split.test)) == counts
    assert sorted(split.train + split.val + split.test) == sorted(stems)


def test_split_file_round_trip_and_errors(tmp_path: Path):
    cfg = SplitConfig()
    split = make_split(STEMS, cfg)
    write_split(split, tmp_path / "split.json", cfg, "abc")
    assert read_split(tmp_path / "split.json") == (split, "abc")
    with pytest.raises(DataError, match="run the split stage"):
        read_split(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"train": ["a"], "val": ["a"], "test": ["b"]}')
    with pytest.raises(DataError, match="more than one"):
        read_split(tmp_path / "bad.json")
    with pytest.raises(DataError, match="too few"):
        make_split(STEMS[:2], cfg)


def _write_pair(root: Path, image: np.ndarray, mask: Image.Image, stem: str = "X00001") -> str:
    (root / "PNGImages").mkdir(parents=True, exist_ok=True)
    (root / "PedMasks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "PNGImages" / f"{stem}.png")
    mask.save(root / "PedMasks" / f"{stem}_mask.png")
    return stem


def _centroid(weights: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in weights.shape), indexing="ij")
    total = weights.sum()
    return float((weights * ys).sum() / total), float((weights * xs).sum() / total)


@pytest.mark.parametrize("min_size", [24, 40, 100])
def test_resized_masks_stay_centred_on_their_image_content(tmp_path: Path, min_size: int):
    # A white square and its mask: after the resize both must sit at the same place. The legacy
    # nearest resize of masks put them 0.37-0.6 px right of and below the antialiased image.
    image = np.zeros((64, 64, 3), np.uint8)
    image[21:41, 13:33] = 255
    mask = np.zeros((64, 64), np.uint8)
    mask[21:41, 13:33] = 1
    stem = _write_pair(tmp_path, image, Image.fromarray(mask))
    sample = load_sample(tmp_path, stem, min_size=min_size, max_size=1000)
    image_y, image_x = _centroid(sample.image.float().mean(0))
    mask_y, mask_x = _centroid(sample.masks[0].float())
    assert abs(mask_y - image_y) < 0.2 and abs(mask_x - image_x) < 0.2


def test_a_palette_mask_is_read_as_instance_ids(tmp_path: Path):
    # Index 0 (background) is white and indices 1 and 2 are equally bright colours: read as
    # brightness, the background would become an instance and the two people one.
    ids = np.zeros((32, 48), np.uint8)
    ids[4:20, 4:14], ids[8:30, 20:40] = 1, 2
    mask = Image.fromarray(ids, mode="P")
    mask.putpalette([255, 255, 255, 200, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 9))
    stem = _write_pair(tmp_path, np.zeros((32, 48, 3), np.uint8), mask)
    sample = load_sample(tmp_path, stem, min_size=32, max_size=48)
    assert len(sample.masks) == 2
    assert torch.equal(sample.masks[0], torch.from_numpy(ids == 1))
    assert torch.equal(sample.masks[1], torch.from_numpy(ids == 2))


def test_a_grey_and_alpha_mask_is_read_from_its_grey_channel(tmp_path: Path):
    ids = np.zeros((16, 16), np.uint8)
    ids[2:8, 2:8], ids[9:15, 5:12] = 1, 2
    mask = Image.fromarray(np.stack([ids, np.full_like(ids, 255)], axis=-1), mode="LA")
    stem = _write_pair(tmp_path, np.zeros((16, 16, 3), np.uint8), mask)
    sample = load_sample(tmp_path, stem, min_size=16, max_size=16)
    assert [int(m.sum()) for m in sample.masks] == [36, 42]


def test_a_colour_mask_is_rejected_with_its_path(tmp_path: Path):
    stem = _write_pair(tmp_path, np.zeros((16, 16, 3), np.uint8), Image.new("RGB", (16, 16), (1, 1, 1)))
    with pytest.raises(DataError, match=r"X00001_mask.png: mask has 3 channels; expected one channel"):
        load_sample(tmp_path, stem, min_size=16, max_size=16)


def test_a_scored_part_carries_its_ground_truth_to_where_the_files_are_not(synthetic_root: Path, tmp_path: Path):
    # A trial or evaluate run on another Ray node gets the pickled set, not the dataset's files.
    stems = list_stems(synthetic_root)[:2]
    scored = open_samples(synthetic_root, stems, 48, 64, cache=True, label="", scored=True)
    expected = [scored.truth(index) for index in range(len(stems))]
    moved = synthetic_root.rename(tmp_path / "gone")
    elsewhere = pickle.loads(pickle.dumps(scored))
    assert [elsewhere.truth(index) for index in range(len(stems))] == expected
    unscored = pickle.loads(pickle.dumps(open_samples(moved, stems, 48, 64, cache=True, label="")))
    moved.rename(tmp_path / "gone-too")
    with pytest.raises(DataError):  # its truth was never decoded: read from the files, which are gone
        unscored.truth(0)
