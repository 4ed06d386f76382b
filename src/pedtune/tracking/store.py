"""MLflow: a checked connection to the store, and runs that always end with a status.

The MlflowClient is passed explicitly (no process-wide active run), so the train stage,
the tuning driver and the evaluation can each manage parent and child runs side by side.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from filelock import FileLock
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from pedtune import console
from pedtune.config.schema import MlflowConfig
from pedtune.errors import TrackingError
from pedtune.paths import from_root
from pedtune.tracking.server import check_reachable

log = console.get(__name__)

SQLITE = "sqlite:///"  # a local store's URI: this prefix, then the database file's path
MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
TAG_PARENT = "mlflow.parentRunId"


@dataclass(frozen=True)
class Store:
    client: MlflowClient
    tracking_uri: str
    experiment_id: str
    experiment_name: str


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative ``sqlite:///path`` absolute (Ray workers may run in another cwd)."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        path = from_root(uri[len(SQLITE) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return SQLITE + str(path)
    return uri


def _opening_lock(uri: str) -> AbstractContextManager[Any]:
    """One process at a time opens a local SQLite store.

    MLflow creates and migrates the database's tables when a client first opens it, and two
    processes doing that at once (queued DVC experiments started together) leave the file
    half-migrated for good; two creating the experiment at once would also clash.
    """
    if uri.startswith(SQLITE):
        return FileLock(uri[len(SQLITE) :].split("?")[0] + ".lock")
    return nullcontext()


def open_store(cfg: MlflowConfig) -> Store:
    """Connect (within ``connect_timeout_s`` for a server) and get or create the experiment."""
    check_reachable(cfg)
    uri = resolve_tracking_uri(cfg.tracking_uri)
    try:
        with _opening_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(cfg.experiment)
            if experiment is None:
                location = cfg.artifact_location
                if location and "://" not in location:
                    location = from_root(location).as_uri()
                experiment_id = client.create_experiment(cfg.experiment, artifact_location=location or None)
            else:
                experiment_id = experiment.experiment_id
    except Exception as error:  # the store's own errors vary by backend
        raise TrackingError(f"cannot use MLflow store {uri}: {error}") from None
    return Store(client, uri, experiment_id, cfg.experiment)


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


# What a stage's parent run records about its inputs, copied onto each of its child runs so that
# a filter such as `tags.dvc_experiment = "..."` finds the trials and evaluation runs too.
PROVENANCE_TAGS = ("git_commit", "dvc_experiment", "dataset_hash")


def provenance(tags: Mapping[str, str]) -> dict[str, str]:
    """The PROVENANCE_TAGS among a parent run's ``tags``, for its child runs."""
    return {key: tags[key] for key in PROVENANCE_TAGS if key in tags}


def source_tags() -> dict[str, str]:
    """What produced a run: the git commit, and the experiment's name when DVC runs one."""
    tags = {"git_commit": git_commit()}
    if experiment := os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`, not by `dvc repro`
        tags["dvc_experiment"] = experiment
    return tags


def log_params(store: Store, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(key, str(value)) for key, value in params.items()]
    for start in range(0, len(items), 100):
        store.client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(store: Store, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
    for start in range(0, len(items), MAX_BATCH):
        store.client.log_batch(run_id, metrics=items[start : start + MAX_BATCH])


@contextmanager
def ending_run(store: Store, run_id: str) -> Iterator[None]:
    """Mark ``run_id`` FINISHED, FAILED (an exception) or KILLED (Ctrl-C) when the block ends."""
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        yield
        status = RunStatus.to_string(RunStatus.FINISHED)
    except KeyboardInterrupt:
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    finally:
        try:
            store.client.set_terminated(run_id, status=status)
        except Exception as error:  # never hide the original error behind a logging one
            log.warning(f"could not mark MLflow run {run_id} {status}: {error}")


@contextmanager
def tracked_run(
    store: Store, name: str, tags: Mapping[str, str] | None = None, parent_run_id: str | None = None
) -> Iterator[str]:
    """Create a run, yield its id, and end it with the status :func:`ending_run` gives."""
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
    run_id = store.client.create_run(store.experiment_id, run_name=name, tags=all_tags).info.run_id
    with ending_run(store, run_id):
        yield run_id
