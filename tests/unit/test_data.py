from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import masks_to_boxes

from pedtune.config.schema import SplitConfig
from pedtune.data.dataset import DetectionDataset, SampleStore, list_stems, load_sample, scale_for
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


def test_flipped_training_samples_keep_boxes_on_their_masks(synthetic_store: SampleStore):
    dataset = DetectionDataset(synthetic_store, hflip_prob=1.0)
    image, target = dataset[0]
    assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0
    recomputed = masks_to_boxes(target["masks"].bool()) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(target["boxes"].as_subclass(torch.Tensor), recomputed)
    unflipped = synthetic_store[0].masks
    assert torch.equal(target["masks"].bool(), unflipped.flip(-1))
    assert target["labels"].tolist() == [1] * len(unflipped)


def test_cache_decodes_each_image_once(synthetic_root: Path, monkeypatch):
    store = SampleStore(synthetic_root, list_stems(synthetic_root), 48, 64, cache=True).preload()
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
