"""README's smoke run, exactly as README.md writes it, in a throw-away copy of the study: the whole study
(fetch → … → tune → evaluate) as one DVC experiment on tiny synthetic data, and what DVC and MLflow then show."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from dvc_metrics import columns, numbers_only
from study_copy import PUBLISHED_STUDY_MAX_BYTES, REPO, folder_bytes, run

from pedtune import console
from pedtune.cli import main
from pedtune.config import load_config, validate
from pedtune.published import read_published
from pedtune.result_code import code_hashes

# On one xdist worker with the other tests of the smoke study (tests/e2e/conftest.py), which it builds once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke-study")]


def test_the_smoke_run_as_readme_gives_it_reproduces_the_whole_study_as_a_dvc_experiment(smoke_study: Path):
    study = smoke_study  # README's smoke block ran in it, on the shipped params.yaml (tests/e2e/conftest.py)
    committed = (REPO / "params.yaml").read_text()

    report = (study / "results/evaluate/report.md").read_text()
    # Which one depends on whether the smoke sweep's best is the initial configuration.
    summary = json.loads((study / "results/evaluate/summary.json").read_text())
    title = ("The initial configuration on the held-out test split." if summary["tuned_is_initial"]
             else "Initial vs tuned configuration on the held-out test split.")
    assert report.startswith(f"**{title}**"), report[:200]
    experiments = [
        exp for entry in json.loads(run(["dvc", "exp", "show", "--json"], study).stdout)
        for exp in entry.get("experiments") or [] if exp.get("name") == "smoke"
    ]
    assert len(experiments) == 1, experiments
    (revision,) = experiments[0]["revs"]
    data = revision["data"]
    assert data["params"]["params.yaml"]["data"]["data"]["source"] == "synthetic"
    assert data["metrics"]["metrics/tune.json"]["data"]["num_trials"] == 3
    # (DVC leaves out "delta" when it is all null: the sweep kept the initial configuration.)
    assert {"initial", "runs_trained", "wall_time_s"} <= set(data["metrics"]["metrics/evaluate.json"]["data"])
    # params.yaml's history is untouched: the profile lives in the experiment, not in a commit.
    assert run(["git", "log", "--format=%s", "--", "params.yaml"], study).stdout.split("\n")[0] == "shipped params"
    assert run(["git", "show", "HEAD:params.yaml"], study).stdout == committed

    published = check_publishing(study)
    check_the_whole_study(study)  # ends with a tune param changed since the study ran
    before = {path: path.read_bytes() for path in published.rglob("*") if path.is_file()}
    code, err = pedtune_here(["publish", "smoke"], study)
    assert code == 1 and "stages changed since they ran: tune" in err, err
    assert {path: path.read_bytes() for path in published.rglob("*") if path.is_file()} == before
    assert [path.name for path in (study / "studies").iterdir()] == ["smoke"]  # no half-written folder beside it


def pedtune_here(args: list[str], study: Path) -> tuple[int, str]:
    """``pedtune ARGS`` run from ``study`` in this process, where line coverage sees it (the stages run
    as README's commands start them); its exit status and what it logged."""
    err = io.StringIO()
    try:
        with contextlib.chdir(study), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        console.configure(None)
    return code, err.getvalue()


def check_publishing(study: Path) -> Path:
    """`pedtune publish` of the study as it ran, and the import of its MLflow runs into another store."""
    code, err = pedtune_here(["publish", "smoke"], study)
    assert code == 0, err
    folder = study / "studies" / "smoke"
    size = folder_bytes(folder)
    assert size < PUBLISHED_STUDY_MAX_BYTES, size
    assert {"params.yaml", "report.md", "provenance.json", "metrics/train.json", "metrics/tune.json",
            "metrics/evaluate.json", "tune/trials.csv", "tune/importance.csv", "evaluate/summary.json",
            "mlflow/runs.json"} <= {path.relative_to(folder).as_posix() for path in folder.rglob("*")}
    assert list((folder / "evaluate" / "pictures").glob("*.jpg")) and list((folder / "tune").glob("*.png"))
    assert (folder / "report.md").read_text() == (study / "results/evaluate/report.md").read_text()
    assert (folder / "params.yaml").read_text() == (study / "params.yaml").read_text()

    provenance = json.loads((folder / "provenance.json").read_text())
    head = run(["git", "rev-parse", "HEAD"], study).stdout.strip()
    assert provenance["commit"] == head
    assert read_published(folder).code == code_hashes(study / "src" / "pedtune")
    split = json.loads((study / "data/split.json").read_text())
    assert provenance["data"]["dataset_hash"] == split["dataset_hash"]
    assert provenance["data"]["split_sha256"] == hashlib.sha256((study / "data/split.json").read_bytes()).hexdigest()
    assert set(provenance["wall_time_s"]) == {"train", "tune", "evaluate"}
    assert all(seconds > 0 for seconds in provenance["wall_time_s"].values())
    environment = provenance["environment"]
    assert set(environment["packages"]["versions"]) == {"torch", "torchvision", "ray", "optuna", "hyperopt", "mlflow",
                                                        "dvc", "pycocotools"}
    assert environment["hardware"]["cores"] >= 1 and environment["hardware"]["gpu"]

    # README's one import command, into a store of its own: what `mlflow ui` then lists.
    imported = f"sqlite:///{study}/imported/mlflow.db"
    code, err = pedtune_here(["import-runs", "studies/smoke", "--tracking-uri", imported], study)
    assert code == 0, err
    client = MlflowClient(tracking_uri=imported)
    runs = client.search_runs([client.get_experiment_by_name("published-smoke").experiment_id], max_results=100)
    assert len(runs) == 3 + 3 + 4  # train, the sweep and its 3 trials, the evaluation and its 4 runs
    ids = {r.info.run_id for r in runs}
    assert all(r.data.tags["mlflow.parentRunId"] in ids for r in runs if "mlflow.parentRunId" in r.data.tags)
    (train,) = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert [m.step for m in client.get_metric_history(train.info.run_id, "bbox_mAP")] == [1, 2]
    assert train.info.run_id != provenance["mlflow"]["runs"]["train"] == train.data.tags["pedtune.published_run_id"]
    return folder


def check_the_whole_study(study: Path) -> None:
    """What every stage wrote, what DVC and MLflow show of it, and that a change reruns only what it affects."""
    tune = json.loads((study / "metrics/tune.json").read_text())
    assert tune["num_trials"] == 3
    evaluate = json.loads((study / "metrics/evaluate.json").read_text())
    assert {"initial", "tuned", "delta"} <= set(evaluate)
    report = (study / "results/evaluate/report.md").read_text()
    assert "initial" in report and "tuned" in report
    assert list((study / "results/evaluate/pictures").glob("*.png"))

    # README's `dvc metrics show` and `dvc plots show` find every file dvc.yaml declares.
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], study).stdout)
    shown = {path for rev in metrics.values() for path, entry in rev["data"].items() if "error" not in entry}
    assert shown == {"metrics/train.json", "metrics/tune.json", "metrics/evaluate.json"}, metrics
    # What `dvc metrics show` prints: numbers only, at most 20 columns a file (docs/pipeline.md).
    for rev in metrics.values():
        for path, entry in rev["data"].items():
            shown = columns(entry["data"])
            assert len(shown) <= 20 and numbers_only(shown), (path, shown)
    plots = json.loads(run(["dvc", "plots", "show", "--json"], study).stdout)
    assert not plots.get("errors"), plots["errors"]
    assert all(plots["data"][name] for name in plots["data"]), [n for n, d in plots["data"].items() if not d]
    # Only the plots dvc.yaml defines at its top level: no stage's file drawn again on its own.
    defined = {next(iter(entry)) if isinstance(entry, dict) else entry
               for entry in yaml.safe_load((study / "dvc.yaml").read_text())["plots"]}
    assert set(plots["data"]) == defined, sorted(plots["data"])

    # best_params.yaml is a drop-in for the train: section.
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["train"] = yaml.safe_load((study / "results/tune/best_params.yaml").read_text())
    validate(params)

    client = MlflowClient(tracking_uri=f"sqlite:///{study}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(load_config(study / "params.yaml").mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    by_stage: dict[str, list] = {}
    for mlrun in runs:
        by_stage.setdefault(mlrun.data.tags.get("stage", "trial"), []).append(mlrun)
    assert all(r.info.status == "FINISHED" for r in runs if "mlflow.parentRunId" not in r.data.tags)
    parents = {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 3  # train, the sweep, the evaluation
    assert len(children) == 3 + 4  # one per trial, one per (config, seed)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} <= parents
    # The kept model, registered (what `mlflow ui` shows under Models): one version of the evaluation's run, with
    # docs/model.md's tags, and the champion alias (the first version of its name).
    name = load_config(study / "params.yaml").mlflow.registered_model
    (version,) = client.search_model_versions(f"name='{name}'")
    (evaluation,) = [r for r in by_stage["evaluate"] if r.info.run_id in parents]
    assert str(version.version) == "1" and version.run_id == evaluation.info.run_id
    assert {"dataset_hash", "split_hash", "test_bbox_mAP", "git_commit", "config", "seed", "artifact_size_bytes",
            "champion_decision"} <= set(version.tags), version.tags
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    assert "up to date" in run(["dvc", "status"], study).stdout
    assert "Running stage" not in run(["dvc", "repro"], study).stdout

    # A change to one tune param invalidates tune and evaluate only.
    text = (study / "params.yaml").read_text()
    (study / "params.yaml").write_text(text.replace("  seed: 0\n  num_samples", "  seed: 1\n  num_samples", 1))
    status = run(["dvc", "status"], study).stdout
    assert "tune:" in status
    assert not any(f"{stage}:" in status for stage in ("fetch", "weights", "split", "train", "evaluate"))
    planned = run(["dvc", "repro", "--dry"], study).stdout
    assert "> pedtune tune" in planned
    assert not any(f"> pedtune {stage}" in planned for stage in ("fetch", "weights", "split", "train"))
    # evaluate follows whenever the sweep's result (best_params.yaml) changes.
    dag = run(["dvc", "dag", "--dot"], study).stdout
    assert '"tune" -> "evaluate"' in dag
