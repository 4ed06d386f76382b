"""The driver around the trials: ASHA, failing trials, resuming, resources. A fake fit keeps them cheap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from tune_fakes import DELAY_ENV, WORKER_DIES_LR, fake_fit
from tune_study import build_study, read_csv, sweep_runs, tracked_state

from pedtune import paths
from pedtune.data.split import read_split
from pedtune.errors import ClusterError
from pedtune.stages.inputs import read_inputs
from pedtune.stages.tune import _trial_inputs, restorable, run_tune
from pedtune.tune.storage import open_storage

HERE = Path(__file__).resolve().parent
# One Ray for the module's sweeps, on the one worker that runs them all (--dist loadgroup).
pytestmark = [pytest.mark.xdist_group("tune-driver"), pytest.mark.usefixtures("module_ray")]
LR_CHOICES = {"param": "train.lr", "type": "choice", "values": [0.01, 0.001, 0.1, 2.0]}


@pytest.mark.slow
def test_asha_stops_losers_and_a_diverging_trial_errors_without_ending_the_sweep(study: Path):
    # One trial at a time: ASHA compares each newcomer with the initial config's finished curve.
    config = build_study(study, {
        "train": {"epochs": 3, "lr": 0.01},
        "tune": {"searcher": "random", "seed": 0, "num_samples": 6, "max_concurrent": 1, "scheduler": "asha",
                 "asha": {"grace_period": 1, "reduction_factor": 2}, "search_space": [LR_CHOICES]},
    })
    metrics = run_tune(config, fit_fn=fake_fit)

    rows = read_csv(study / paths.TUNE_DIR / "trials.csv")
    assert len(rows) == 6 == metrics["num_trials"]
    assert rows[0]["initial"] == "true" and rows[0]["status"] == "COMPLETED" and rows[0]["epochs"] == "3"
    diverged = [r for r in rows if r["train.lr"] == "2.0"]
    assert diverged and all(r["status"] == "ERROR" and "non-finite loss" in r["error"] for r in diverged)
    stopped = [r for r in rows if r["status"] == "STOPPED_EARLY"]
    assert stopped and all(int(r["epochs"]) < 3 for r in stopped)
    assert metrics["num_errored"] == len(diverged) and metrics["num_stopped_early"] == len(stopped)

    runs = sweep_runs(study)
    outcome = {run.data.tags["trial_id"]: run for run in runs.children}
    assert len(outcome) == 6
    for row in rows:
        run = outcome[row["trial_id"]]
        assert run.data.tags["trial_outcome"] == row["status"]
        assert run.info.status == ("FAILED" if row["status"] == "ERROR" else "FINISHED")
        assert runs.metric_steps(run, "bbox_mAP") == list(range(1, int(row["epochs"]) + 1))



@pytest.mark.slow
def test_a_trial_whose_worker_process_dies_is_recorded_failed_and_the_sweep_completes(study: Path):
    config = build_study(study, {
        "train": {"epochs": 2, "lr": 0.01},
        "tune": {"searcher": "random", "seed": 0, "num_samples": 3, "max_concurrent": 1, "scheduler": "fifo",
                 "search_space": [{"param": "train.lr", "type": "choice", "values": [0.01, WORKER_DIES_LR]}]},
    })
    metrics = run_tune(config, fit_fn=fake_fit)

    rows = read_csv(study / paths.TUNE_DIR / "trials.csv")
    assert len(rows) == 3 == metrics["num_trials"]
    died = [r for r in rows if float(r["train.lr"]) == WORKER_DIES_LR]
    survived = [r for r in rows if float(r["train.lr"]) != WORKER_DIES_LR]
    assert died and all(r["status"] == "ERROR" for r in died)
    assert survived and all(r["status"] == "COMPLETED" for r in survived)
    outcome = {run.data.tags["trial_id"]: run for run in sweep_runs(study).children}
    assert {outcome[r["trial_id"]].info.status for r in died} == {"FAILED"}

@pytest.mark.slow
def test_importance_of_a_sweep_reaches_its_table_tune_json_and_mlflow(study: Path, capsys: pytest.CaptureFixture):
    # fake_fit's score depends on the learning rate alone.
    config = build_study(study, {
        "train": {"epochs": 1, "lr": 0.01},
        "tune": {"searcher": "random", "seed": 0, "num_samples": 10, "max_concurrent": 2, "scheduler": "fifo"},
    })
    metrics = run_tune(config, fit_fn=fake_fit)

    fanova = metrics["importance"]["fanova"]
    assert max(fanova, key=fanova.get) == "train.lr" and metrics["importance_trials"] == 10
    assert metrics["importance_scored_at_epoch"] == 1
    rows = read_csv(study / paths.TUNE_DIR / "importance.csv")
    assert [r["param"] for r in rows] == ["train.lr", "train.batch_size", "train.weight_decay"]
    (parent,) = sweep_runs(study).parents
    assert parent.data.metrics["importance_fanova.train.lr"] == pytest.approx(fanova["train.lr"], abs=1e-4)
    assert "hyperparameter importance (fANOVA" in capsys.readouterr().out


def _start_sweep_in_subprocess(root: Path) -> subprocess.Popen:
    script = (
        f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]\n"
        "import tune_study, tune_fakes\n"
        "from pedtune.config import load_config\n"
        "from pedtune.stages.tune import run_tune\n"
        "run_tune(load_config(), fit_fn=tune_fakes.fake_fit)\n"
    )
    env = {**os.environ, DELAY_ENV: "3"}
    return subprocess.Popen([sys.executable, "-c", script], cwd=root, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_first_result(root: Path, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.stat().st_size for p in root.glob("ray_results/sweep-*/trial_*/result.json")):
            return
        assert process.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.5)
    raise AssertionError("no trial reported an epoch in time")


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_duplicate_runs(study: Path, capfd: pytest.CaptureFixture[str]):
    config = build_study(study, {"train": {"epochs": 3}, "tune": {"num_samples": 4, "scheduler": "fifo"}})
    process = _start_sweep_in_subprocess(study)
    try:
        _wait_for_first_result(study, process)
        time.sleep(2)  # the trial is into its next epoch; Ray has saved the experiment state
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        process.wait()
    assert any(run.info.status == "RUNNING" for run in sweep_runs(study).children)

    metrics = run_tune(config, fit_fn=fake_fit)
    assert "resuming the sweep" in capfd.readouterr().err

    rows = read_csv(study / paths.TUNE_DIR / "trials.csv")
    assert len(rows) == 4 == metrics["num_trials"] and all(r["status"] == "COMPLETED" for r in rows)
    runs = sweep_runs(study)
    assert len(runs.parents) == 1 and runs.parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["trial_id"] for r in runs.children) == sorted(r["trial_id"] for r in rows)
    for run in runs.children:
        assert run.info.status == "FINISHED"
        assert runs.metric_steps(run, "bbox_mAP") == [1, 2, 3]  # each epoch logged once
    # The interrupted trial continued from its checkpoint instead of starting over.
    assert any(run.data.metrics["resumed_from"] > 0 for run in runs.children)

    # Running the finished sweep again re-reads it: no trial runs again, and its MLflow runs stay as they were.
    before = tracked_state(study)
    again = run_tune(config, fit_fn=fake_fit)
    assert tracked_state(study) == before
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == {
        k: v for k, v in metrics.items() if k != "wall_time_s"}
    # ... and its wall time adds the re-read to the sweep's, instead of replacing it.
    assert again["wall_time_s"] > metrics["wall_time_s"] > 0
    assert len(sweep_runs(study).children) == 4


def test_trials_train_on_the_train_split_and_score_on_val(study: Path):
    config = build_study(study)
    split, _ = read_split(paths.SPLIT_FILE)
    inputs = _trial_inputs(read_inputs(config), fake_fit)
    assert list(inputs.train_samples.stems) == list(split.train)
    assert list(inputs.val_samples.stems) == list(split.val)
    assert not set(split.test) & (set(inputs.train_samples.stems) | set(inputs.val_samples.stems))


def test_a_refusal_in_a_caller_s_ray_leaves_that_ray_running(study: Path):
    # tests/tune/test_refusal.py: the same refusal in a Ray of the stage's own, which it shuts down.
    config = build_study(study, {"tune": {"resources_per_trial": {"cpu": 4096, "gpu": 0}}})
    assert ray.is_initialized()  # the module's Ray
    with pytest.raises(ClusterError, match="asks for 4096 CPU"):
        run_tune(config, fit_fn=fake_fit)
    assert ray.is_initialized()
    assert not sweep_runs(study).parents  # refused before any MLflow run was opened


def test_a_sweep_killed_before_its_first_snapshot_is_started_afresh(tmp_path: Path):
    (tmp_path / "sweep-abc").mkdir()
    (tmp_path / "sweep-abc" / "tuner.pkl").write_bytes(b"")
    assert not restorable(open_storage(str(tmp_path)), "sweep-abc")  # Tuner.restore would fail on it
    (tmp_path / "sweep-abc" / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    assert restorable(open_storage(str(tmp_path)), "sweep-abc")


def test_the_sweep_wall_time_ledger_adds_up_and_needs_the_sweep_folder(tmp_path: Path):
    from pedtune.stages.tune import WALL_TIME_FILE, record_sweep_seconds, sweep_seconds

    folder, storage = tmp_path / "sweep-abc", open_storage(str(tmp_path))
    record_sweep_seconds(storage, folder.name, 5.0)
    assert not folder.exists() and sweep_seconds(storage, folder.name) == 0.0
    folder.mkdir()
    record_sweep_seconds(storage, folder.name, 3317.3)
    record_sweep_seconds(storage, folder.name, sweep_seconds(storage, folder.name) + 5.2)
    assert sweep_seconds(storage, folder.name) == 3322.5
    (folder / WALL_TIME_FILE).write_text("{not json", encoding="utf-8")
    assert sweep_seconds(storage, folder.name) == 0.0
