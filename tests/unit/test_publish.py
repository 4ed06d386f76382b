"""pedtune publish's checks and its MLflow export, on a scratch store and a copy of the package; the whole command
runs in tests/e2e/test_readme_smoke.py on the smoke study."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pedtune.config.schema import MlflowConfig
from pedtune.publish import PublishError, check_code_as_committed, study_commit
from pedtune.result_code import STUDY_STAGES, output_code, package_root, source_paths
from pedtune.published import imported_run_filter
from pedtune.tracking.export import IMPORTED_RUN_TAG, RunsExportError, export_runs, import_runs, read_export
from pedtune.tracking.store import TAG_PARENT, log_metrics, log_params, open_store, tracked_run


def _lock(root: Path) -> dict:
    """dvc.lock's stages as `dvc repro` of the package at ``root`` would record their code deps."""
    return {stage: {"deps": [{"path": path, "md5": hashlib.md5((root / path.removeprefix("src/pedtune/")).read_bytes())
                              .hexdigest()} for path in source_paths(output_code(stage, root), root)]}
            for stage in STUDY_STAGES}


@pytest.fixture
def commit_root(tmp_path: Path) -> Path:
    """A copy of the package: the result-affecting code of a commit."""
    root = tmp_path / "src" / "pedtune"
    shutil.copytree(package_root(), root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_a_study_that_ran_the_commit_s_code_passes(commit_root: Path):
    assert check_code_as_committed(_lock(commit_root), commit_root) == []


def test_a_result_affecting_file_modified_or_untracked_at_run_time_is_named(commit_root: Path):
    lock = _lock(commit_root)
    train_py = "src/pedtune/engine/train.py"
    for dep in lock["train"]["deps"]:
        if dep["path"] == train_py:
            dep["md5"] = hashlib.md5(b"edited").hexdigest()  # the stage ran with an edited fit loop
    lock["evaluate"]["deps"].append({"path": "src/pedtune/evaluate/extra.py", "md5": "0" * 32})  # not committed
    del lock["fetch"]
    problems = check_code_as_committed(lock, commit_root)
    assert problems == [
        "stage fetch never ran (not in dvc.lock)",
        f"train: ran with {train_py} modified from the commit's",
        "evaluate: ran with src/pedtune/evaluate/extra.py, which the commit does not hold (untracked or uncommitted)",
    ]


def test_a_stage_whose_code_deps_were_stale_is_named(commit_root: Path):
    lock = _lock(commit_root)
    lock["split"]["deps"] = [dep for dep in lock["split"]["deps"] if dep["path"] != "src/pedtune/data/split.py"]
    assert check_code_as_committed(lock, commit_root) == [
        "split: src/pedtune/data/split.py affects its results at the commit but was not its dep (dvc.yaml's code "
        "deps were stale: `pedtune dvc-deps`)"]


def _store(folder: Path, experiment: str = "pedtune"):
    return open_store(MlflowConfig(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_location=str(folder / "a"),
                                   experiment=experiment))


def test_exported_runs_import_with_their_histories_and_parent_links_once(tmp_path: Path):
    source = _store(tmp_path / "source")
    with tracked_run(source, "tune sweep-x", {"stage": "tune"}) as parent:
        log_params(source, parent, {"tune.num_samples": 2})
        for trial in range(2):
            with tracked_run(source, f"trial_{trial}", {"trial_id": str(trial)}, parent_run_id=parent) as child:
                log_params(source, child, {"train.lr": 0.01 * (trial + 1)})
                for epoch in (1, 2):
                    log_metrics(source, child, {"bbox_mAP": 0.1 * epoch + trial}, step=epoch)
    with tracked_run(source, "unrelated", {"stage": "train"}):
        pass
    exported = export_runs(source, [parent])
    assert [run["run_name"] for run in exported["runs"]] == ["tune sweep-x", "trial_0", "trial_1"]

    target = _store(tmp_path / "target", "published-smoke")
    assert import_runs(target, exported) == 3
    assert import_runs(target, exported) == 0  # a second import adds nothing
    client: MlflowClient = target.client
    runs = {run.info.run_name: run for run in client.search_runs([target.experiment_id])}
    assert sorted(runs) == ["trial_0", "trial_1", "tune sweep-x"]
    new_parent = runs["tune sweep-x"]
    assert new_parent.data.tags[IMPORTED_RUN_TAG] == parent and new_parent.info.status == "FINISHED"
    # README's Results name this filter for each stage's run (pedtune.evaluate.readme.runs_line).
    (found,) = client.search_runs([target.experiment_id], imported_run_filter(parent))
    assert found.info.run_id == new_parent.info.run_id
    for trial in range(2):
        child = runs[f"trial_{trial}"]
        assert child.data.tags[TAG_PARENT] == new_parent.info.run_id
        assert child.data.params["train.lr"] == str(0.01 * (trial + 1))
        history = [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "bbox_mAP")]
        original = [(m.step, m.value) for m in source.client.get_metric_history(child.data.tags[IMPORTED_RUN_TAG],
                                                                                 "bbox_mAP")]
        assert sorted(history) == sorted(original) == [(1, 0.1 + trial), (2, 0.2 + trial)]
        assert child.info.start_time == source.client.get_run(child.data.tags[IMPORTED_RUN_TAG]).info.start_time


def test_an_export_that_is_not_one_is_refused(tmp_path: Path):
    with pytest.raises(RunsExportError, match="does not exist"):
        read_export(tmp_path / "runs.json")
    (tmp_path / "runs.json").write_text('{"runs": []}')
    with pytest.raises(RunsExportError, match="not an MLflow export of format 1"):
        read_export(tmp_path / "runs.json")


def test_a_study_from_a_commit_this_checkout_lacks_is_refused(tmp_path: Path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=ci@pedtune", "-c", "user.name=ci", "commit", "-q",
                    "--allow-empty", "-m", "first"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert study_commit(tmp_path, {"evaluate": {"git_commit": head}}) == head
    with pytest.raises(PublishError, match="not in this checkout's history"):
        study_commit(tmp_path, {"evaluate": {"git_commit": "1" * 40}})
    with pytest.raises(PublishError, match="ran outside a git checkout"):
        study_commit(tmp_path, {"evaluate": {"git_commit": "unknown"}})
