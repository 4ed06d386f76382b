"""PennFudanPed exported as COCO trains exactly as the folders do: same split, samples, ground truth, metrics."""

from __future__ import annotations

from pathlib import Path

import torch

from pedtune.config.schema import DataConfig, SplitConfig, SyntheticConfig
from pedtune.data.dataset import SampleSet, list_stems
from pedtune.data.export import export_coco
from pedtune.data.fetch import fetch_dataset
from pedtune.data.split import make_split
from pedtune.data.synthetic import write_synthetic_dataset
from pedtune.engine.train import fit
from pedtune.errors import DataError

import pytest


def test_the_export_gives_the_same_split_samples_truth_and_metrics(tmp_path: Path, tiny_config):
    native = tmp_path / "PennFudanPed"
    write_synthetic_dataset(SyntheticConfig(num_images=12, height=60, width=80, max_instances=2), native)
    annotation = export_coco(native, tmp_path / "export")
    coco = tmp_path / "dataset"
    index = fetch_dataset(DataConfig(format="coco", source="dir", local_path=str(tmp_path / "export" / "images"),
                                     annotations=str(annotation), expected_images=12), coco)

    split_cfg = SplitConfig()
    categories = {key: set(image.categories) for key, image in index.images.items()}
    split = make_split(list_stems(native), split_cfg)
    assert make_split(sorted(categories), split_cfg, categories) == split

    size = (48, 64)  # resized at decode time (80 x 60 -> 64 x 48), scored at 80 x 60
    stores = {name: (SampleSet(native, split.part(name), *size), SampleSet(coco, split.part(name), *size))
              for name in ("train", "val")}
    for ours, theirs in stores.values():
        assert theirs.categories == ours.categories == {1: "person"}
        for index in range(len(ours)):
            a, b = ours[index], theirs[index]
            assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
            assert a.original_size == b.original_size == (60, 80)
            assert ours.truth(index) == theirs.truth(index)

    config = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"epochs": 1})})
    from_folders = fit(config, *stores["train"][:1], *stores["val"][:1]).history
    from_export = fit(config, stores["train"][1], stores["val"][1]).history
    scores = ("train_loss", "bbox_mAP", "bbox_AP50", "segm_mAP", "segm_AP50")
    assert [{k: h[k] for k in scores} for h in from_folders] == [{k: h[k] for k in scores} for h in from_export]


def test_exporting_a_coco_folder_is_refused(tmp_path: Path):
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DataError, match="already holds a COCO dataset"):
        export_coco(tmp_path, tmp_path / "out")
