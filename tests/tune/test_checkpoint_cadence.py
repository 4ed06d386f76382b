"""How often a trial hands Tune a checkpoint: every ``tune.checkpoint_every``-th epoch, metrics every epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray import tune

from pedtune.config import validate
from pedtune.engine.train import EpochResult
from pedtune.tune import trainable
from pedtune.tune.space import initial_point

REPO = Path(__file__).resolve().parents[2]


class RecordingTune:
    """Stands in for ``ray.tune`` inside a trial: records what each report carried."""

    Checkpoint = tune.Checkpoint

    def __init__(self) -> None:
        self.reports: list[tuple[int, int | None]] = []

    def report(self, metrics: dict[str, Any], checkpoint: tune.Checkpoint | None = None) -> None:
        saved = None
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                saved = trainable.load_state(Path(folder) / trainable.CHECKPOINT_FILE)["epoch"]
        self.reports.append((metrics["epoch"], saved))

    @staticmethod
    def get_checkpoint() -> None:
        return None


@pytest.mark.parametrize(("every", "expected"), [
    (1, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
    (2, [(1, None), (2, 2), (3, None), (4, 4), (5, None)]),
])
def test_a_trial_checkpoints_the_epochs_params_yaml_asks_for(monkeypatch, tmp_path: Path, every: int,
                                                            expected: list):
    raw = yaml.safe_load((REPO / "profiles" / "cpu-quick.yaml").read_text())
    raw["tune"]["checkpoint_every"] = every
    base = validate(raw)
    recording = RecordingTune()
    monkeypatch.setattr(trainable, "tune", recording)

    def five_epochs(config, train_store, val_store, pretrained, on_epoch_end, resume):
        assert resume is None
        for epoch in range(1, 6):
            on_epoch_end(EpochResult(epoch, {"bbox_mAP": 0.1 * epoch}), lambda epoch=epoch: {"epoch": epoch})

    trainable.train_trial(initial_point(base), base=base, train_store=None, val_store=None, pretrained={},
                          fit_fn=five_epochs, checkpoint_staging=tmp_path / "staging")
    assert recording.reports == expected
    assert list((tmp_path / "staging").iterdir()) == []  # each staged folder is gone once reported
