"""The train stage trains on the split's train part and scores on its val part, never on test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pedtune import paths
from pedtune.config import validate
from pedtune.config.schema import DataConfig, SyntheticConfig
from pedtune.data.fetch import fetch_dataset
from pedtune.data.split import read_split
from pedtune.model.weights import save_weights
from pedtune.stages import train
from pedtune.stages.split import run_split

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_train_stage_trains_on_train_and_scores_on_val(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["model"].update(
        arch="maskrcnn_mobilenet_v3_large_fpn", weights="none", min_size=64, max_size=96, detections_per_img=10,
        box_batch_size_per_image=64
    )
    raw["train"].update(epochs=1, warmup_epochs=0.5, device="cpu", batch_size=4)
    raw["data"].update(source="synthetic", num_workers=0)
    raw["mlflow"].update(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    raw["tune"]["asha"].update(grace_period=1)  # may not exceed train.epochs
    config = validate(raw)
    fetch_dataset(DataConfig(source="synthetic", synthetic=SyntheticConfig(num_images=12, height=64, width=80,
                                                                          max_instances=2)),
                  paths.DATA_ROOT, index_file=paths.DATA_INDEX)
    run_split(config)
    save_weights(config.model, paths.PRETRAINED)
    seen: list[tuple[list[str], list[str]]] = []
    real_fit = train.fit

    def recording_fit(config, train_samples, val_samples, *args, **kwargs):
        seen.append((list(train_samples.stems), list(val_samples.stems)))
        return real_fit(config, train_samples, val_samples, *args, **kwargs)

    monkeypatch.setattr(train, "fit", recording_fit)
    metrics = train.run_train(config)

    split, _ = read_split(paths.SPLIT_FILE)
    assert seen == [(list(split.train), list(split.val))]
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0 and paths.TRAINED_MODEL.exists()
