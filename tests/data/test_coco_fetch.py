"""``data.format: coco``: the fetch stage's layout, the split, and every refusal before training."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image

from pedtune.config.schema import DataConfig, SplitConfig
from pedtune.data.checksum import md5sum
from pedtune.data.coco_fetch import read_dataset
from pedtune.data.fetch import fetch_dataset
from pedtune.data.split import make_split
from pedtune.data.synthetic import synthetic_stems
from pedtune.errors import DataError
from coco_fakes import dir_config, load, save, write_coco

SPLIT = SplitConfig()


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    return write_coco(tmp_path / "source")


# ---------------------------------------------------------------------------- layout


def test_fetch_lays_out_images_and_the_json_byte_for_byte(tmp_path: Path, coco: tuple[Path, Path]):
    images, annotation = coco
    summary = fetch_dataset(dir_config(images, str(annotation)), tmp_path / "data" / "dataset")
    dest = tmp_path / "data" / "dataset"
    assert (dest / "annotations" / "all.json").read_bytes() == annotation.read_bytes()  # DVC sees an edit
    assert sorted(p.name for p in (dest / "images").iterdir()) == sorted(p.name for p in images.iterdir())
    raw = load(annotation)
    assert summary.num_images == len(raw["images"])
    assert summary.num_instances == sum(1 for a in raw["annotations"] if not a["iscrowd"])
    dataset = read_dataset(dest)
    assert dataset.categories == summary.categories == {11: "square", 21: "triangle", 31: "disc"}
    assert summary.shipped_split is None


def test_zip_source_names_paths_inside_the_archive(tmp_path: Path, coco: tuple[Path, Path]):
    images, annotation = coco
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(annotation, "export/labels/instances.json")
        for path in sorted(images.iterdir()):
            zf.write(path, f"export/pictures/{path.name}")
    cfg = DataConfig(format="coco", source="zip", local_path=str(archive), md5=md5sum(archive), size_bytes=None,
                     annotations="export/labels/instances.json", images="export/pictures", expected_images=20)
    assert fetch_dataset(cfg, tmp_path / "dataset").num_images == 20


def test_synthetic_source_writes_a_coco_dataset(tmp_path: Path):
    cfg = DataConfig(format="coco", source="synthetic", synthetic={"num_images": 10, "height": 48, "width": 64})
    summary = fetch_dataset(cfg, tmp_path / "dataset")
    assert summary.num_images == 10 and (tmp_path / "dataset" / "annotations" / "all.json").is_file()


def test_coco_needs_its_annotations_and_pennfudan_refuses_them():
    with pytest.raises(ValueError, match="format 'coco' needs data.annotations"):
        DataConfig(format="coco", source="dir", local_path="x")
    with pytest.raises(ValueError, match="data.annotations is for format 'coco'"):
        DataConfig(source="dir", local_path="x", annotations="a.json")


# ---------------------------------------------------------------------------- split


def test_with_one_category_the_split_is_todays():
    stems = synthetic_stems(170)  # both collections, >= 20 images each: the stratified-by-collection path
    one = {stem: {1} for stem in stems}
    assert make_split(stems, SPLIT, one) == make_split(stems, SPLIT)
    small = synthetic_stems(12)
    assert make_split(small, SPLIT, {s: {7} for s in small}) == make_split(small, SPLIT)


def test_every_category_in_at_least_three_images_reaches_every_part():
    stems = [f"img{i:03d}" for i in range(40)]
    drawn = make_split(stems, SPLIT)
    rare = sorted(drawn.train)[:3]  # as drawn, all three holders of category 2 are in train
    categories = {stem: {1} | ({2} if stem in rare else set()) for stem in stems}
    categories[sorted(drawn.train)[3]] = set()  # a negative
    split = make_split(stems, SPLIT, categories)
    for part in ("train", "val", "test"):
        assert any(2 in categories[s] for s in split.part(part)), part
        assert len(split.part(part)) == len(drawn.part(part))  # sizes kept: swaps, not moves
    too_rare = {stem: {1} | ({3} if stem in rare[:2] else set()) for stem in stems}
    assert make_split(stems, SPLIT, too_rare) == drawn  # in two images it cannot be in three parts


def test_a_shipped_split_is_read_as_three_parts(tmp_path: Path, coco: tuple[Path, Path]):
    images, annotation = coco
    raw = load(annotation)
    parts = {"train": raw["images"][:12], "val": raw["images"][12:16], "test": raw["images"][16:]}
    files = {}
    for name, chosen in parts.items():
        ids = {image["id"] for image in chosen}
        part = {**raw, "images": chosen, "annotations": [a for a in raw["annotations"] if a["image_id"] in ids]}
        files[name] = tmp_path / f"{name}.json"
        save(files[name], part)
    dest = tmp_path / "dataset"
    split = fetch_dataset(dir_config(images, {k: str(v) for k, v in files.items()}), dest).shipped_split
    assert split is not None
    assert split.val == tuple(sorted(Path(i["file_name"]).stem for i in parts["val"]))


# ---------------------------------------------------------------------------- refusals

Edit = Callable[[dict[str, Any]], None]


def _first(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    """The first annotation whose segmentation is a polygon list / an RLE dict."""
    want = list if kind == "polygon" else dict
    return next(a for a in raw["annotations"] if isinstance(a["segmentation"], want) and not a["iscrowd"])


REFUSALS: dict[str, tuple[Edit, str]] = {
    "missing images": (lambda raw: raw.pop("images"), r"missing 'images'"),
    "missing annotations": (lambda raw: raw.pop("annotations"), r"missing 'annotations'"),
    "missing categories": (lambda raw: raw.pop("categories"), r"missing 'categories'"),
    "duplicate image id": (lambda raw: raw["images"][1].update(id=raw["images"][0]["id"]),
                           r"images\[1\] \(id 1\): duplicate image id 1"),
    "duplicate annotation id": (lambda raw: raw["annotations"][1].update(id=raw["annotations"][0]["id"]),
                                r"annotations\[1\] \(id 1\): duplicate annotation id 1"),
    "unknown image": (lambda raw: raw["annotations"][0].update(image_id=999),
                      r"annotations\[0\] \(id 1\): image_id 999 names no image"),
    "unknown category": (lambda raw: raw["annotations"][0].update(category_id=5),
                         r"annotations\[0\] \(id 1\): category_id 5 names no category"),
    "box of width 0": (lambda raw: raw["annotations"][0]["bbox"].__setitem__(2, 0),
                       r"annotations\[0\] \(id 1\): bbox .* has width or height <= 0"),
    "box outside": (lambda raw: raw["annotations"][0]["bbox"].__setitem__(0, 75.0),
                    r"annotations\[0\] \(id 1\): bbox .* lies outside its image shapes00001.png \(80 x 64\)"),
    "polygon of 2 points": (lambda raw: _first(raw, "polygon").update(segmentation=[[1, 1, 5, 5]]),
                            r"\(id 3\): polygon 0 has 2 points; a polygon needs at least 3"),
    "RLE of another size": (lambda raw: _first(raw, "rle")["segmentation"].update(size=[32, 80]),
                            r"\(id 1\): RLE size \[32, 80\] differs from its image shapes00001.png"),
    "no segmentation": (lambda raw: _first(raw, "polygon").pop("segmentation"),
                        r"\(id 3\): no 'segmentation': Mask R-CNN trains on masks"),
    "no masks at all": (lambda raw: raw.update(annotations=[a for a in raw["annotations"] if a["iscrowd"]]),
                        r"no annotated object with a mask .*Mask R-CNN needs instance masks"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_bad_entry_is_refused_naming_file_and_entry(tmp_path: Path, coco: tuple[Path, Path], case: str):
    images, annotation = coco
    edit, message = REFUSALS[case]
    raw = load(annotation)
    edit(raw)
    save(annotation, raw)
    dest = tmp_path / "data" / "dataset"
    with pytest.raises(DataError, match=message) as refused:
        fetch_dataset(dir_config(images, str(annotation)), dest)
    assert str(annotation) in str(refused.value)
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # nothing half-written


def test_json_that_does_not_parse_is_named(tmp_path: Path, coco: tuple[Path, Path]):
    images, annotation = coco
    annotation.write_text(annotation.read_text()[:-10], encoding="utf-8")
    with pytest.raises(DataError, match=rf"{annotation}: not valid JSON"):
        fetch_dataset(dir_config(images, str(annotation)), tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


@pytest.mark.parametrize("problem", ["missing", "unreadable", "other size"])
def test_each_bad_image_file_is_refused(tmp_path: Path, coco: tuple[Path, Path], problem: str):
    images, annotation = coco
    path = images / "shapes00007.png"
    if problem == "missing":
        path.unlink()
        message = "image file missing"
    elif problem == "unreadable":
        path.write_bytes(path.read_bytes()[:200])
        message = "cannot decode image"
    else:
        Image.new("RGB", (81, 64)).save(path)
        message = "image is 81 x 64 but the JSON says 80 x 64"
    with pytest.raises(DataError, match=rf"shapes00007.png: {message}.*\(images\[id 7\]"):
        fetch_dataset(dir_config(images, str(annotation)), tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


@pytest.mark.parametrize("drop_negatives", [False, True])
def test_split_stage_on_a_coco_dataset(tmp_path: Path, monkeypatch, raw_params: dict, drop_negatives: bool):
    from pedtune import paths
    from pedtune.config import validate
    from pedtune.data.index import read_index
    from pedtune.data.split import read_split
    from pedtune.stages.fetch import run_fetch
    from pedtune.stages.split import run_split

    monkeypatch.chdir(tmp_path)
    raw_params["data"].update(format="coco", source="synthetic", drop_negatives=drop_negatives,
                              synthetic={**raw_params["data"]["synthetic"], "num_images": 20})
    config = validate(raw_params)
    run_fetch(config)
    run_split(config)
    split, _ = read_split(paths.SPLIT_FILE)
    dataset = read_dataset(paths.DATA_ROOT)
    negatives = {key for key, (index, image) in dataset.entries().items() if not index.image_categories(image.id)}
    assert negatives == {key for key, image in read_index(paths.DATA_INDEX).images.items() if not image.categories}
    listed = set(split.train + split.val + split.test)
    assert negatives and (listed.isdisjoint(negatives) if drop_negatives else negatives <= listed)
