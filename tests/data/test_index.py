"""The fetch stage's second output, data/index.json: what its checks found, read by the later stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coco_fakes import dir_config, write_coco
from pedtune import paths
from pedtune.config.schema import DataConfig
from pedtune.data.checksum import dataset_hash
from pedtune.data.dataset import SampleSet, reader_for
from pedtune.data.fetch import fetch_dataset
from pedtune.data.index import index_folder, read_index
from pedtune.data.split import read_split
from pedtune.errors import DataError
from pedtune.stages.split import run_split


def test_the_written_index_is_what_the_checks_found_for_either_format(tmp_path: Path, synthetic_root: Path):
    pennfudan = fetch_dataset(DataConfig(source="dir", local_path=str(synthetic_root), expected_images=None),
                              tmp_path / "pf", index_file=tmp_path / "pf.json")
    images, annotation = write_coco(tmp_path / "source")
    coco = fetch_dataset(dir_config(images, str(annotation)), tmp_path / "coco", index_file=tmp_path / "coco.json")
    for index, folder in ((pennfudan, tmp_path / "pf"), (coco, tmp_path / "coco")):
        assert read_index(tmp_path / f"{folder.name}.json") == index == index_folder(folder)
        assert index.dataset_hash == dataset_hash(folder)
        image = next(iter(index.images.values()))
        assert (folder / image.file_name).is_file()
    assert pennfudan.labels == {1: "person"} and coco.labels == {1: "square", 2: "triangle", 3: "disc"}
    assert coco.category_ids == {1: 11, 2: 21, 3: 31}
    assert any(not image.categories and image.objects == 0 for image in coco.images.values())  # negatives kept


def test_the_split_stage_reads_the_index_only_and_follows_an_edit_of_it(tmp_path: Path, monkeypatch, tiny_config,
                                                                         synthetic_cfg):
    monkeypatch.chdir(tmp_path)
    data = tiny_config.data.model_copy(update={"source": "synthetic", "synthetic": synthetic_cfg})
    fetch_dataset(data, paths.DATA_ROOT, index_file=paths.DATA_INDEX)
    run_split(tiny_config)
    split, content_hash = read_split(paths.SPLIT_FILE)
    assert content_hash == dataset_hash(paths.DATA_ROOT)

    (paths.DATA_ROOT / "PNGImages" / f"{split.train[0]}.png").unlink()  # no image is opened again
    run_split(tiny_config)
    assert read_split(paths.SPLIT_FILE) == (split, content_hash)

    raw = json.loads(paths.DATA_INDEX.read_text())
    raw["images"] = [entry for entry in raw["images"] if entry["key"] != split.test[0]]
    paths.DATA_INDEX.write_text(json.dumps(raw))
    run_split(tiny_config)
    edited, _ = read_split(paths.SPLIT_FILE)
    assert split.test[0] not in edited.train + edited.val + edited.test
    with pytest.raises(DataError, match="the split names images the dataset at .* lacks"):  # the readers too
        SampleSet(paths.DATA_ROOT, split.test, 48, 64, reader=reader_for(paths.DATA_ROOT, read_index(paths.DATA_INDEX)))


@pytest.mark.parametrize("content", [None, "{", '{"format": "pennfudan", "images": []}'])
def test_a_missing_or_foreign_index_is_refused_naming_the_fetch_stage(tmp_path: Path, content: str | None):
    path = tmp_path / "index.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=r"index.json.*dvc repro fetch"):
        read_index(path)
