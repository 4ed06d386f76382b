"""bench/epoch_profile.py: an epoch's wall time taken apart from fit's own steps and hooks, and its profile.

One tiny run of the light model through ``fit`` on the CPU (the dry run of what a GPU machine
runs with the defaults), and the split's arithmetic on a hand-made timeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import epoch_profile  # noqa: E402
from bench.epoch_profile import Epoch, Step, split  # noqa: E402

TINY = ["--synthetic", "--num-images", "8", "--image-size", "48x64", "--min-size", "48", "--max-size", "64",
        "--threads", "1", "--set", "model.box_batch_size_per_image=32"]


def test_one_epoch_of_fit_taken_apart_with_its_hooks_and_profile(tmp_path: Path) -> None:
    out = tmp_path / "epoch_profile.json"
    # From params.yaml, as the GPU machine runs it, with the light model.
    result = epoch_profile.main([*TINY, "--params", str(REPO / "params.yaml"), "--arch", "light", "--train-images", "4",
                                 "--set", "data.num_workers=0", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    (run,) = result["runs"]
    assert run["arch"] == "maskrcnn_mobilenet_v3_large_fpn" and run["precision"] == "fp32"
    assert run["hooks"] == ["checkpoint", "mlflow"]  # the trial's checkpoint and the train stage's MLflow logging
    (epoch,) = run["epochs"]
    assert epoch["steps"] == -(-run["train_images"] // run["batch_size"]) and epoch["images"] == run["train_images"]
    parts = ("steps_s", "data_wait_s", "checkpoint_start_s", "eval_s", "epoch_end_s")
    assert all(epoch[name] > 0 for name in parts)
    assert sum(epoch[name] for name in parts) == pytest.approx(epoch["wall_s"], abs=1e-3)
    # fit's own clock agrees: its eval time is ours from the end of training to on_epoch_end.
    assert epoch["fit_eval_time_s"] == pytest.approx(epoch["checkpoint_start_s"] + epoch["eval_s"], rel=0.1)
    # The synthetic images share one size: the first step meets the only padded shape, the second repeats it.
    assert epoch["steps"] == 2 and epoch["first_shape_steps"] == 1 and epoch["setup_s"] > 0
    assert epoch["first_shape_excess_s"] == pytest.approx(epoch["first_shape_steps_s"] - epoch["median_repeat_step_s"],
                                                          abs=2e-4)
    assert 0 < epoch["eval_share"] < 1 and epoch["epoch_images_per_s"] < epoch["step_images_per_s"]
    profile = run["profile"]
    assert profile["epoch"] == 1 and profile["activities"] == ["CPU"] and "device_busy_share" not in profile
    names = [op["name"] for op in profile["top_ops_by_self_cpu_time"]]
    assert any(name.startswith("aten::") and "conv" in name for name in names), names
    assert 0 < profile["loader_next_s"] < profile["wall_s"]
    from bench import run_all

    table = run_all.table(tmp_path)
    assert table.count("| 9. one epoch of fit, the steps' share of its wall (mobilenet_v3_large_fpn at 48/64 px") == 1
    assert table.count("| 9. profiled epoch 1 of 1, by self cpu time") == 1


def test_a_profile_epoch_beyond_the_epochs_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "epoch_profile.json"
    with pytest.raises(SystemExit) as exit_info:
        epoch_profile.main([*TINY, "--epochs", "2", "--profile-epoch", "3", "--json", str(out)])
    assert exit_info.value.code == 2 and "--profile-epoch 3" in capsys.readouterr().err
    assert not out.exists()


def _epoch(number: int, steps: list[Step], trained_at: float) -> Epoch:
    return Epoch(number, steps, trained_at=trained_at, checkpoint_started_at=trained_at + 0.5,
                 ended_at=trained_at + 4.5, done_at=trained_at + 5.0, metrics={"epoch_time_s": 0, "eval_time_s": 0})


def test_the_split_counts_first_shapes_per_fit_and_a_skipped_optimizer_step_as_step_time() -> None:
    seen: set[tuple[int, int]] = set()
    # Epoch 1 from t=0: shapes A, A, B; the second step's optimizer step skipped (AMP overflow).
    first = _epoch(1, [Step(1.0, 2, (64, 96), 4.0), Step(5.0, 2, (64, 96), None), Step(6.0, 2, (64, 128), 8.0)], 9.0)
    row = split(first, seen, started_at=0.0)
    assert row["steps_s"] == 3.0 + 1.0 + 2.0 and row["data_wait_s"] == 9.0 - 6.0  # start, gap after step 1, tail
    assert row["first_shape_steps"] == 2 and row["first_shape_steps_s"] == 5.0 and row["skipped_optimizer_steps"] == 1
    assert row["median_repeat_step_s"] == 1.0 and row["first_shape_excess_s"] == 3.0
    assert (row["checkpoint_start_s"], row["eval_s"], row["epoch_end_s"], row["wall_s"]) == (0.5, 4.0, 0.5, 14.0)
    assert row["eval_share"] == round(4 / 14, 4) and row["epoch_vs_step"] == round(6 / 14, 4)
    assert row["step_images_per_s"] == 1.0 and row["epoch_images_per_s"] == round(6 / 14, 3)
    # Epoch 2 meets shape B again and a new one C: only C is a first shape; the last step runs to the pass's end.
    second = _epoch(2, [Step(15.0, 2, (64, 128), 16.0), Step(16.5, 1, (96, 96), None)], 18.0)
    row = split(second, seen, started_at=14.0)
    assert row["first_shape_steps"] == 1 and row["first_shape_steps_s"] == 1.5 and row["steps_s"] == 2.5
    assert row["images"] == 3 and row["data_wait_s"] == 4.0 - 2.5


def test_an_epoch_without_its_hooks_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="epoch 1: fit did not call both epoch hooks"):
        split(Epoch(1, [Step(0.0, 2, (32, 32), 1.0)]), set(), started_at=0.0)
