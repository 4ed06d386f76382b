"""``pedtune publish NAME``: a study that `dvc repro` ran, written to ``studies/NAME/`` to be committed.

What the folder holds (:mod:`pedtune.published` reads ``report.md`` and ``provenance.json``)::

    params.yaml  report.md  provenance.json
    metrics/{train,tune,evaluate}.json
    tune/{trials.csv,importance.csv,best_params.yaml}  tune/*.png (downscaled)
    evaluate/summary.json  evaluate/per_seed.png  evaluate/pictures/*.jpg (downscaled)
    mlflow/runs.json     the study's MLflow runs (pedtune.tracking.export): `pedtune import-runs` loads them

Refused, with nothing written, unless the study is whole and its record honest: `dvc status` finds
every study stage as it ran (its outputs, params and code deps unchanged since), and every
result-affecting file (:mod:`pedtune.result_code`, the stages' code deps) that each stage ran with,
as dvc.lock recorded it, is the file at the commit the stage ran from (not modified, not untracked).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from pedtune import console, paths
from pedtune.config import StudyConfig
from pedtune.data.checksum import md5sum, sha256sum
from pedtune.errors import PedtuneError
from pedtune.evaluate import files as evaluate_files
from pedtune.io import atomic_path
from pedtune.published import PROVENANCE, REPORT, commit_status
from pedtune.result_code import STUDY_STAGES, code_hashes, output_code, source_paths
from pedtune.tracking.export import export_runs
from pedtune.tracking.import_study import RUNS_EXPORT
from pedtune.tracking.record import read_run_record
from pedtune.tracking.store import Store, open_store
from pedtune.tune.outputs import IMPORTANCE_CSV

log = console.get(__name__)
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TRACKED_STAGES = ("train", "tune", "evaluate")  # the stages with MLflow runs and a wall time
CODE_PREFIX = "src/pedtune/"
PICTURE_SIDE = 960  # px, the longer side of a test picture as published (JPEG)
PLOT_SIDE = 1000  # px, of a plot (PNG)
PICTURE_QUALITY = 80


class PublishError(PedtuneError):
    """The study cannot be published as it stands: what is missing or changed, and what to run."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise PublishError("publishing needs git: the record names the commit the study ran from") from None


def _dvc_changes(repo: Path) -> dict[str, Any]:
    """`dvc status` of the study's stages: empty when each is as it ran."""
    try:
        result = subprocess.run(["dvc", "status", "--json", *STUDY_STAGES], cwd=repo, capture_output=True, text=True,
                                timeout=600)
    except FileNotFoundError:
        raise PublishError("publishing needs dvc on the PATH (`dvc status` checks the study is as it ran)") from None
    if result.returncode != 0:
        raise PublishError(f"`dvc status` failed in {repo}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout or "{}")


def _lock(repo: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    except (FileNotFoundError, KeyError, TypeError):
        raise PublishError(f"{repo / 'dvc.lock'} lists no stages: run the study first (`dvc repro`)") from None


def _commit_tree(repo: Path, commit: str, into: Path) -> Path:
    """``src/pedtune`` as ``commit`` holds it, extracted under ``into``; the package folder."""
    archive = _git(repo, "archive", "--format=tar", commit, "src/pedtune")
    if archive.returncode != 0:
        raise PublishError(f"commit {commit} has no src/pedtune: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src" / "pedtune"


def check_code_as_committed(lock: Mapping[str, Any], commit_root: Path) -> list[str]:
    """Each study stage's code deps as dvc.lock recorded them (the files as the stage ran) against the
    result-affecting files of the commit's tree at ``commit_root`` (its src/pedtune): the differences, one line
    each; empty when every stage ran the commit's code."""
    problems = []
    for stage in STUDY_STAGES:
        if stage not in lock:
            problems.append(f"stage {stage} never ran (not in dvc.lock)")
            continue
        ran = {dep["path"]: dep.get("md5") for dep in lock[stage].get("deps", [])
               if dep["path"].startswith(CODE_PREFIX)}
        expected = set(source_paths(output_code(stage, commit_root), commit_root))
        for path in sorted(ran.keys() | expected):
            file = commit_root / path.removeprefix(CODE_PREFIX)
            if path not in ran:
                problems.append(f"{stage}: {path} affects its results at the commit but was not its dep "
                                "(dvc.yaml's code deps were stale: `pedtune dvc-deps`)")
            elif not file.is_file():
                problems.append(f"{stage}: ran with {path}, which the commit does not hold (untracked or uncommitted)")
            elif md5sum(file) != ran[path]:
                problems.append(f"{stage}: ran with {path} modified from the commit's")
    return problems


def _records(repo: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for stage in TRACKED_STAGES:
        path = repo / paths.STAGE_RUNS[stage]
        try:
            records[stage] = read_run_record(path)
        except FileNotFoundError:
            raise PublishError(f"{path} is missing: the {stage} stage ran before it recorded its MLflow run; "
                               "run the study again (`dvc repro`)") from None
        except json.JSONDecodeError as error:
            raise PublishError(f"{path} is not valid JSON ({error})") from None
    return records


def _environment(records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    environments = {stage: record["environment"] for stage, record in records.items()}
    first = next(iter(environments.values()))
    differing = [stage for stage, environment in environments.items() if environment != first]
    if differing:
        raise PublishError(f"the stages ran in different environments (packages or hardware): "
                           f"{', '.join(differing)} not as {next(iter(environments))}; run the study again in one "
                           "(`dvc repro --force`)")
    return first


def _downscaled(source: Path, target: Path, side: int, jpeg: bool) -> None:
    from PIL import Image  # noqa: PLC0415 - only publishing draws pictures

    with Image.open(source) as image:
        image.thumbnail((side, side))
        if jpeg:
            image.convert("RGB").save(target, format="JPEG", quality=PICTURE_QUALITY, optimize=True)
        else:
            image.save(target, format="PNG", optimize=True)


def _copy(repo: Path, folder: Path) -> None:
    """The params, report, metrics, tables and (downscaled) pictures of the study in ``repo`` into ``folder``."""
    copies = {
        Path("params.yaml"): Path("params.yaml"),
        evaluate_files.REPORT: Path(REPORT),
        evaluate_files.SUMMARY: Path("evaluate/summary.json"),
        paths.TRAIN_METRICS: Path("metrics/train.json"),
        paths.TUNE_METRICS: Path("metrics/tune.json"),
        paths.EVALUATE_METRICS: Path("metrics/evaluate.json"),
        paths.TUNE_DIR / "trials.csv": Path("tune/trials.csv"),
        paths.TUNE_DIR / IMPORTANCE_CSV: Path(f"tune/{IMPORTANCE_CSV}"),
        paths.BEST_PARAMS: Path("tune/best_params.yaml"),
    }
    for source, target in copies.items():
        if not (repo / source).is_file():
            raise PublishError(f"{repo / source} is missing: run the study first (`dvc repro`)")
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / source, folder / target)
    plots = [*sorted((repo / paths.TUNE_DIR).glob("*.png")), repo / evaluate_files.PER_SEED_PLOT]
    for plot in (plot for plot in plots if plot.is_file()):
        target = folder / ("tune" if plot.parent == repo / paths.TUNE_DIR else "evaluate") / plot.name
        _downscaled(plot, target, PLOT_SIDE, jpeg=False)
    pictures = sorted((repo / evaluate_files.PICTURES).glob("*.png"))
    (folder / "evaluate" / "pictures").mkdir(parents=True, exist_ok=True)
    for picture in pictures:
        _downscaled(picture, folder / "evaluate" / "pictures" / f"{picture.stem}.jpg", PICTURE_SIDE, jpeg=True)


def provenance(repo: Path, commit: str, code: Mapping[str, str], records: Mapping[str, Mapping[str, Any]],
               lock: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    split = json.loads((repo / paths.SPLIT_FILE).read_text(encoding="utf-8"))
    dataset = [out.get("md5") for out in lock.get("fetch", {}).get("outs", []) if out["path"] == str(paths.DATA_ROOT)]
    metrics = {stage: json.loads((repo / path).read_text(encoding="utf-8")) for stage, path in
               (("train", paths.TRAIN_METRICS), ("tune", paths.TUNE_METRICS), ("evaluate", paths.EVALUATE_METRICS))}
    return {
        "commit": commit,
        "code": dict(code),
        "data": {"split_sha256": sha256sum(repo / paths.SPLIT_FILE), "dataset_hash": split.get("dataset_hash", ""),
                 "dataset_dvc_md5": dataset[0] if dataset else ""},
        "wall_time_s": {stage: metrics[stage].get("wall_time_s") for stage in TRACKED_STAGES},
        "environment": _environment(records),
        "mlflow": {"experiment": experiment, "export": RUNS_EXPORT.as_posix(),
                   "runs": {stage: record["mlflow_run_id"] for stage, record in records.items()}},
    }


def study_commit(repo: Path, records: Mapping[str, Mapping[str, Any]]) -> str:
    """The commit the study ran from: its evaluate stage's (each stage's code is checked against it)."""
    commit = records["evaluate"].get("git_commit", "")
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise PublishError(f"the evaluate stage ran outside a git checkout (commit {commit!r}): a published study "
                           "names the commit it ran from")
    status = commit_status(commit, repo)
    if status != "ancestor":
        raise PublishError(f"the study ran from commit {commit}, which is not in this checkout's history ({status}): "
                           "publish from a checkout that holds it")
    return commit


def publish(name: str, config: StudyConfig, repo: Path = Path("."), studies: Path = paths.STUDIES) -> Path:
    """Write ``studies/NAME`` from the study in ``repo``; the folder written. Refused (PublishError) with nothing
    written when the study is incomplete, changed since it ran, or ran code other than its commit's."""
    if not NAME.match(name):
        raise PublishError(f"study name {name!r}: use lower-case letters, digits, '.', '_' and '-' (e.g. cpu-quick)")
    records = _records(repo)
    changed = _dvc_changes(repo)
    if changed:
        raise PublishError(f"stages changed since they ran: {', '.join(sorted(changed))} (`dvc status` lists what); "
                           "run `dvc repro` and publish then")
    lock = _lock(repo)
    commit = study_commit(repo, records)
    with tempfile.TemporaryDirectory(prefix="pedtune-publish-") as scratch:
        commit_root = _commit_tree(repo, commit, Path(scratch))
        problems = check_code_as_committed(lock, commit_root)
        if problems:
            raise PublishError(f"the study did not run the code of commit {commit}:\n  " + "\n  ".join(problems)
                               + "\ncommit the code, run `dvc repro` and publish then")
        code = code_hashes(commit_root)
    store = open_store(config.mlflow)
    target = repo / studies / name
    with atomic_path(target) as folder:
        folder.mkdir()
        _copy(repo, folder)
        exported = _export(store, records)
        (folder / RUNS_EXPORT).parent.mkdir(parents=True)
        (folder / RUNS_EXPORT).write_text(json.dumps(exported, indent=1) + "\n", encoding="utf-8")
        record = provenance(repo, commit, code, records, lock, store.experiment_name)
        (folder / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    console.summary(log, f"published the study of commit {commit[:12]} as {target} ({size / 1e6:.2f} MB, "
                         f"{len(exported['runs'])} MLflow runs)",
                    wrote=[target], look=[f"git add {studies / name}", f"pedtune import-runs {studies / name}"])
    return target


def _export(store: Store, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        return export_runs(store, [records[stage]["mlflow_run_id"] for stage in TRACKED_STAGES])
    except MlflowException as error:
        raise PublishError(f"the study's MLflow runs are not in {store.tracking_uri} ({error.message}): publish with "
                           "the mlflow.tracking_uri the study logged to") from None
