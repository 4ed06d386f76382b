"""How a trial hands Tune checkpoints: every ``tune.checkpoint_every``-th epoch (metrics every epoch),
written while the epoch is evaluated, nothing left behind when writing or fitting fails; and how a
restored trial reads them back."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from ray import tune
from tune_fakes import save_state

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
                saved = trainable.load_state(Path(folder))["epoch"]
        self.reports.append((metrics["epoch"], saved))

    @staticmethod
    def get_checkpoint() -> None:
        return None


@pytest.mark.parametrize("announces_trained", [True, False], ids=["fit", "fit-without-on_epoch_trained"])
@pytest.mark.parametrize(("every", "expected"), [
    (1, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]),
    (2, [(1, None), (2, 2), (3, None), (4, 4), (5, None)]),
])
def test_a_trial_checkpoints_the_epochs_params_yaml_asks_for(monkeypatch, tmp_path: Path, every: int,
                                                            expected: list, announces_trained: bool):
    raw = yaml.safe_load((REPO / "profiles" / "cpu-quick.yaml").read_text())
    raw["tune"]["checkpoint_every"] = every
    base = validate(raw)
    recording = RecordingTune()
    monkeypatch.setattr(trainable, "tune", recording)

    def five_epochs(config, train_samples, val_samples, pretrained, on_epoch_end, resume, on_epoch_trained):
        assert resume is None
        for epoch in range(1, 6):
            if announces_trained:
                on_epoch_trained(epoch, lambda epoch=epoch: {"epoch": epoch})
            on_epoch_end(EpochResult(epoch, {"bbox_mAP": 0.1 * epoch}),
                         lambda epoch=epoch: {"epoch": epoch, "history": [{"bbox_mAP": 0.1}] * epoch})

    trainable.train_trial(initial_point(base), base=base, train_samples=None, val_samples=None, pretrained={},
                          fit_fn=five_epochs, checkpoint_staging=tmp_path / "staging")
    assert recording.reports == expected
    assert list((tmp_path / "staging").iterdir()) == []  # each staged folder is gone once reported


def _trial(monkeypatch, staging: Path, fit_fn) -> RecordingTune:
    base = validate(yaml.safe_load((REPO / "profiles" / "cpu-quick.yaml").read_text()))
    recording = RecordingTune()
    monkeypatch.setattr(trainable, "tune", recording)
    trainable.train_trial(initial_point(base), base=base, train_samples=None, val_samples=None, pretrained={},
                          fit_fn=fit_fn, checkpoint_staging=staging)
    return recording


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("checkpoint-writer")]


def test_the_training_state_is_written_while_the_epoch_is_evaluated(monkeypatch, tmp_path: Path):
    staging = tmp_path / "staging"
    weights = {"weight": torch.arange(4.0)}

    def one_epoch(config, train_samples, val_samples, pretrained, on_epoch_end, resume, on_epoch_trained):
        on_epoch_trained(1, lambda: {"epoch": 1, "model": weights})
        # "Evaluating": the state must reach the disk before this epoch's report is made.
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(Exception):
                (written,) = staging.glob(f"*/{trainable.CHECKPOINT_FILE}")
                if trainable.load_state(written.parent)["epoch"] == 1:
                    break
            assert time.monotonic() < deadline, "the checkpoint was not written before the report"
            time.sleep(0.01)
        on_epoch_end(EpochResult(1, {"bbox_mAP": 0.5}), lambda: {"epoch": 1, "model": weights,
                                                                "history": [{"bbox_mAP": 0.5}]})

    assert _trial(monkeypatch, staging, one_epoch).reports == [(1, 1)]
    assert list(staging.iterdir()) == [] and _writer_threads() == []


def test_a_checkpoint_that_cannot_be_written_fails_the_trial_and_leaves_nothing(monkeypatch, tmp_path: Path):
    staging = tmp_path / "staging"

    def unsavable_state(config, train_samples, val_samples, pretrained, on_epoch_end, resume, on_epoch_trained):
        on_epoch_trained(1, lambda: {"epoch": 1, "model": threading.Lock()})  # cannot be pickled
        on_epoch_end(EpochResult(1, {"bbox_mAP": 0.5}), lambda: {"epoch": 1, "history": []})

    with pytest.raises(TypeError, match="lock"):
        _trial(monkeypatch, staging, unsavable_state)
    assert list(staging.iterdir()) == [] and _writer_threads() == []


def test_a_fit_failing_while_its_checkpoint_is_written_leaves_nothing(monkeypatch, tmp_path: Path):
    staging = tmp_path / "staging"

    def fails_evaluating(config, train_samples, val_samples, pretrained, on_epoch_end, resume, on_epoch_trained):
        on_epoch_trained(1, lambda: {"epoch": 1, "model": {"weight": torch.zeros(2**20)}})
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        _trial(monkeypatch, staging, fails_evaluating)
    assert list(staging.iterdir()) == [] and _writer_threads() == []


class RestoringTune:
    """Stands in for ``ray.tune`` inside a trial that Tune restores from ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def get_checkpoint(self) -> tune.Checkpoint:
        return tune.Checkpoint(str(self.folder))


def test_a_restored_trial_reads_the_state_and_history_of_its_checkpoint(monkeypatch, tmp_path: Path):
    history = [{"bbox_mAP": 0.1}, {"bbox_mAP": 0.2}]
    save_state({"epoch": 2, "model": {"weight": torch.ones(3)}, "history": history}, tmp_path)
    monkeypatch.setattr(trainable, "tune", RestoringTune(tmp_path))
    state = trainable.restored_state()
    assert state["epoch"] == 2 and state["history"] == history
    assert torch.equal(state["model"]["weight"], torch.ones(3))


def test_a_checkpoint_from_before_the_history_file_still_restores(monkeypatch, tmp_path: Path):
    # An interrupted sweep resumed after upgrading: its state.pt holds the history itself.
    history = [{"bbox_mAP": 0.1}]
    torch.save({"epoch": 1, "model": {}, "history": history}, tmp_path / trainable.CHECKPOINT_FILE)
    monkeypatch.setattr(trainable, "tune", RestoringTune(tmp_path))
    state = trainable.restored_state()
    assert state["epoch"] == 1 and state["history"] == history
