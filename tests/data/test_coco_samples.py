"""The COCO loader: labels, masks of every encoding, crowd regions, negatives, converted images,
and the ground truth at the original size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from coco_fakes import dir_config, load, write_coco
from pedtune.data.coco_synthetic import CROWD_IMAGE, GREY_IMAGE, NEGATIVE_EVERY, RGBA_IMAGE
from pedtune.data.dataset import DetectionDataset, SampleSet
from pedtune.data.fetch import fetch_dataset
from pedtune.engine.coco_eval import coco_metrics, ground_truth
from pedtune.errors import DataError


@pytest.fixture
def fetched(tmp_path: Path) -> tuple[Path, Path]:
    """``(dataset root as the fetch stage lays it out, the source JSON)``."""
    images, annotation = write_coco(tmp_path / "source")
    fetch_dataset(dir_config(images, str(annotation)), tmp_path / "dataset")
    return tmp_path / "dataset", annotation


def _key(number: int) -> str:
    return f"shapes{number + 1:05d}"


def _store(root: Path, min_size: int = 64, max_size: int = 80) -> SampleSet:
    keys = [_key(n) for n in range(20)]
    return SampleSet(root, keys, min_size, max_size, cache=True)


def test_labels_are_contiguous_and_names_kept(fetched):
    root, annotation = fetched
    store = _store(root)
    assert store.categories == {1: "square", 2: "triangle", 3: "disc"}
    raw = load(annotation)
    label_of = {11: 1, 21: 2, 31: 3}
    for number in range(20):
        expected = [label_of[a["category_id"]] for a in raw["annotations"]
                    if a["image_id"] == number + 1 and not a["iscrowd"]]
        assert store[number].labels.tolist() == expected


def test_every_mask_encoding_decodes_as_pycocotools_does(fetched):
    root, annotation = fetched
    store = _store(root)  # 64 x 80 images at min 64, max 80: no resizing
    coco = COCO(str(annotation))
    for number in range(20):
        anns = [a for a in coco.imgToAnns[number + 1] if not a["iscrowd"]]
        expected = [coco.annToMask(a).astype(bool) for a in anns]
        got = store[number].masks.numpy()
        assert len(got) == len(expected)
        for mask, want in zip(got, expected):
            assert np.array_equal(mask, want)


def test_crowd_regions_are_not_trained_on_but_scored_as_cocoeval_does(fetched):
    root, _ = fetched
    store = _store(root)
    (_, truth) = store.truth(CROWD_IMAGE)
    assert [entry["iscrowd"] for entry in truth].count(1) == 1
    assert len(store[CROWD_IMAGE].masks) == len(truth) - 1
    # The ground truth's objects predicted exactly score 1; the crowd region needs no detection.
    results = [
        {"image_id": index, "category_id": entry["category_id"], "bbox": entry["bbox"], "score": 1.0,
         "segmentation": entry["segmentation"]}
        for index in range(len(store)) for entry in store.truth(index)[1] if not entry["iscrowd"]
    ]
    metrics = coco_metrics(ground_truth(store), results)
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["segm_mAP"] == pytest.approx(1.0)


def test_negatives_train_with_empty_targets_and_images_are_converted_to_rgb(fetched):
    root, _ = fetched
    dataset = DetectionDataset(_store(root))
    image, target = dataset[NEGATIVE_EVERY - 1]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape[0] == 0 and target["labels"].shape == (0,)
    for number in (GREY_IMAGE, RGBA_IMAGE):
        image, _ = dataset[number]
        assert image.shape == (3, 64, 80)


def test_ground_truth_stays_at_the_original_size_when_samples_are_resized(fetched):
    root, annotation = fetched
    store = _store(root, min_size=32, max_size=40)
    assert tuple(store[0].image.shape[1:]) == (32, 40) and store[0].original_size == (64, 80)
    truth = ground_truth(store)
    raw = load(annotation)
    assert [(i["height"], i["width"]) for i in truth.coco.dataset["images"]] == [(64, 80)] * 20
    assert sorted(a["bbox"] for a in truth.coco.dataset["annotations"]) == sorted(a["bbox"] for a in raw["annotations"])


def test_a_split_naming_images_the_dataset_lacks_is_refused(fetched):
    root, _ = fetched
    with pytest.raises(DataError, match=r"the split names images the dataset at .* lacks: FudanPed00001"):
        SampleSet(root, ["shapes00001", "FudanPed00001"], 64, 80)


def test_store_pickles_with_its_reader(fetched):
    import pickle

    store = _store(root=fetched[0])
    copy = pickle.loads(pickle.dumps(store))
    assert torch.equal(copy[1].masks, store[1].masks) and copy.categories == store.categories


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_per_category_ap_and_na_for_a_category_the_scored_images_lack(fetched, backend: str):
    root, _ = fetched
    store = _store(root)
    # Only images holding no disc (label 3): the disc has no ground truth there, so no AP (n/a).
    chosen = [key for index, key in enumerate(store.stems)
              if all(entry["category_id"] != 3 for entry in store.truth(index)[1])]
    store = SampleSet(root, chosen, 64, 80)
    results = [
        {"image_id": index, "category_id": entry["category_id"], "bbox": entry["bbox"], "score": 1.0,
         "segmentation": entry["segmentation"]}
        for index in range(len(store)) for entry in store.truth(index)[1] if not entry["iscrowd"]
    ]
    metrics = coco_metrics(ground_truth(store, backend), results, per_category=True)
    assert {key: round(value, 6) for key, value in metrics.items() if "/" in key} == {
        "bbox_AP/square": 1.0, "bbox_AP/triangle": 1.0, "segm_AP/square": 1.0, "segm_AP/triangle": 1.0}
    assert "bbox_AP/disc" not in coco_metrics(ground_truth(store, backend), [], per_category=True)


def test_category_metric_names_are_ones_mlflow_accepts():
    from pedtune.engine.coco_eval import category_metric

    assert category_metric("bbox", "traffic light") == "bbox_AP/traffic light"
    assert category_metric("segm", "person's bag (small)") == "segm_AP/person_s bag _small_"
