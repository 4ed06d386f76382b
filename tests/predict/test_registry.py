"""The kept model registered in MLflow: the champion rule, and loading it where pedtune cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pedtune import console
from pedtune.cli import main
from pedtune.config import StudyConfig
from pedtune.model.checkpoint import read_checkpoint
from pedtune.tracking.registry import CHAMPION, Candidate, champion_decision, model_metadata, register_model
from pedtune.tracking.store import open_store, tracked_run

NAME = "pedtune-maskrcnn"


def store_for(tmp_path: Path, config: StudyConfig):
    mlflow = config.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                                              "artifact_location": str(tmp_path / "mlruns" / "artifacts")})
    return open_store(mlflow)


def register(store, model_file: Path, candidate: Candidate):
    checkpoint = read_checkpoint(model_file)
    metadata = model_metadata(checkpoint.categories, checkpoint.category_ids, 48, 64, 0.5)
    with tracked_run(store, "evaluate") as run_id:
        return register_model(store, run_id, NAME, checkpoint.model(), candidate, metadata, {"git_commit": "abc"})


@pytest.mark.parametrize(
    ("candidate", "moves", "why"),
    [
        (Candidate("d", "s", 0.60, 0.05), True, "more than the 95 % interval's half-width"),
        (Candidate("d", "s", 0.54, 0.05), False, "is not more than"),
        (Candidate("d", "s", 0.40, 0.05), False, "is not more than"),
        (Candidate("d", "other", 0.90, 0.01), False, "another dataset or split"),
        (Candidate("other", "s", 0.90, 0.01), False, "another dataset or split"),
        (Candidate("d", "s", 0.90, None), False, "fewer than two seeds"),
    ],
)
def test_the_champion_rule(candidate: Candidate, moves: bool, why: str):
    champion = {"dataset_hash": "d", "split_hash": "s", "test_bbox_mAP": "0.500000"}
    moved, reason = champion_decision(candidate, champion)
    assert moved is moves and why in reason
    assert champion_decision(candidate, None)[0] is True  # the first version is the champion


def test_a_worse_version_or_one_on_another_split_leaves_the_champion(tmp_path: Path, tiny_config, model_file):
    store = store_for(tmp_path, tiny_config)
    first = register(store, model_file, Candidate("d", "s", 0.50, 0.05))
    worse = register(store, model_file, Candidate("d", "s", 0.45, 0.05))
    elsewhere = register(store, model_file, Candidate("d", "another split", 0.95, 0.01))

    assert (first.version, first.champion) == ("1", True)
    assert (worse.version, worse.champion, elsewhere.version, elsewhere.champion) == ("2", False, "3", False)
    client = MlflowClient(store.tracking_uri)
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "1"
    tags = client.get_model_version(NAME, "3").tags
    assert "another dataset or split" in tags["champion_decision"] and tags["split_hash"] == "another split"
    assert tags["git_commit"] == "abc" and int(tags["artifact_size_bytes"]) == elsewhere.size_bytes > 0


def test_the_champion_loads_and_predicts_where_pedtune_cannot_be_imported_and_in_pedtune_predict(
    tmp_path: Path, tiny_config, model_file, params_file, synthetic_root, dataset_id, capsys
):
    store = store_for(tmp_path, tiny_config)
    register(store, model_file, Candidate("d", "s", 0.5, 0.05))
    script = (
        "import sys; sys.modules['pedtune'] = None\n"
        "import mlflow.pytorch, torch\n"
        f"model = mlflow.pytorch.load_model('models:/{NAME}@{CHAMPION}')\n"
        "out = model([torch.rand(3, 40, 56), torch.rand(3, 48, 64)])\n"
        "print(type(model).__module__, sorted(out[0]), len(out[1]['scores']) > 0, tuple(out[1]['masks'].shape[-2:]))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.tracking_uri}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "torchvision.models.detection.mask_rcnn ['boxes', 'labels', 'masks', 'scores'] True (48, 64)"

    output = tmp_path / "out"
    try:
        # No --model: the default is params.yaml's registered model's champion.
        code = main(["--params", str(params_file), "predict", str(synthetic_root / "PNGImages" / "*.png"),
                     "--output", str(output)])
    finally:
        console.configure(None)
    assert code == 0 and f"model models:/{NAME}@{CHAMPION} (models:/{NAME}/1)" in capsys.readouterr().err
    listing = json.loads((output / "images.json").read_text())
    assert listing["categories"] == [{"id": dataset_id, "name": "person"}] and len(listing["images"]) == 6
