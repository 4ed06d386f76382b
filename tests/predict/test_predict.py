"""``pedtune predict`` on the synthetic images with an untrained light model: the output files, bad inputs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from pedtune import console
from pedtune.cli import main
from pedtune.data.export import export_coco


@pytest.fixture(autouse=True)
def console_reset():
    yield
    console.configure(None)  # main configured pedtune's logger for the predict stage


def predict(params: Path, *args: str) -> int:
    return main(["--params", str(params), "predict", *args])


def test_a_folder_gives_coco_results_pycocotools_loads_overlays_and_a_listed_corrupt_image(
    tmp_path: Path, synthetic_root: Path, model_file: Path, params_file: Path, dataset_id: int, capsys
):
    images = tmp_path / "photos"
    shutil.copytree(synthetic_root / "PNGImages", images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    output = tmp_path / "out"

    code = predict(params_file, str(images), "--model", str(model_file), "--output", str(output),
                   "--batch-size", "4")

    assert code == 1  # an image was skipped; the others were predicted
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err
    listing = json.loads((output / "images.json").read_text())
    assert [Path(entry["file_name"]).name for entry in listing["skipped"]] == ["broken.png"]
    expected = sorted(p.name for p in (synthetic_root / "PNGImages").iterdir())
    assert sorted(Path(entry["file_name"]).name for entry in listing["images"]) == expected
    assert listing["categories"] == [{"id": dataset_id, "name": "person"}]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(output / "images.json"))
        detections = truth.loadRes(str(output / "detections.json"))
    results = detections.dataset["annotations"]
    assert results and {r["category_id"] for r in results} == {dataset_id}
    sizes = {entry["id"]: (entry["height"], entry["width"]) for entry in listing["images"]}
    for result in results:
        x, y, w, h = result["bbox"]
        height, width = sizes[result["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= width + 0.5 and y + h <= height + 0.5 and 0 <= result["score"] <= 1
        assert result["segmentation"]["size"] == [height, width]  # RLE at the image file's size
    overlays = sorted((output / "overlays").glob("*"))
    assert [p.name for p in overlays] == [f"{Path(name).stem}.jpg" for name in expected]
    for overlay in overlays:
        with Image.open(overlay) as picture, Image.open(images / f"{overlay.stem}.png") as original:
            assert picture.format == "JPEG"
            assert picture.size == original.size
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left


def test_a_glob_with_annotations_is_scored_and_other_categories_are_refused(
    tmp_path: Path, synthetic_root: Path, model_file: Path, params_file: Path, dataset_id: int, capsys
):
    dataset = tmp_path / "coco"
    annotations = export_coco(synthetic_root, dataset)  # category 1, "person"
    raw = json.loads(annotations.read_text())
    raw["categories"] = [{"id": dataset_id, "name": "person"}]
    for ann in raw["annotations"]:
        ann["category_id"] = dataset_id
    matching = tmp_path / "matching.json"
    matching.write_text(json.dumps(raw))
    output = tmp_path / "scored"

    code = predict(params_file, str(dataset / "images" / "*.png"), "--model", str(model_file), "--output",
                   str(output), "--annotations", str(matching))

    assert code == 0
    scores = json.loads((output / "scores.json").read_text())
    assert 0.0 <= scores["bbox_mAP"] <= 1.0 and 0.0 <= scores["segm_mAP"] <= 1.0
    listing = json.loads((output / "images.json").read_text())
    by_name = {Path(image["file_name"]).name: image["id"] for image in raw["images"]}
    assert {Path(entry["file_name"]).name: entry["id"] for entry in listing["images"]} == by_name

    refused = tmp_path / "refused"
    code = predict(params_file, str(dataset / "images"), "--model", str(model_file), "--output", str(refused),
                   "--annotations", str(annotations))
    assert code == 1 and "differ from the model's" in capsys.readouterr().err and not refused.exists()


@pytest.mark.parametrize("model", ["models:/pedtune-maskrcnn/2", "missing.pt", None])  # None: the default, the champion
def test_a_model_that_is_not_there_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, synthetic_root: Path, params_file: Path, model: str | None, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "out"
    chosen = ["--model", model] if model else []
    code = predict(params_file, str(synthetic_root / "PNGImages"), *chosen, "--output", str(output))
    assert code == 1 and not output.exists()
    message = capsys.readouterr().err
    assert (model or "models:/pedtune-maskrcnn@champion") in message
    assert "cannot load this MLflow model" in message or "model file not found" in message
    assert not (tmp_path / "mlflow.db").exists()  # only params.yaml's store was asked, not MLflow's default


def test_inputs_that_name_nothing_are_refused(tmp_path: Path, params_file: Path, model_file: Path, capsys):
    assert predict(params_file, str(tmp_path / "nowhere"), "--model", str(model_file)) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert predict(params_file, str(tmp_path / "*.jpg"), "--model", str(model_file)) == 1
    assert "no images there" in capsys.readouterr().err
