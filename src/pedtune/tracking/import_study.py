"""``pedtune import-runs STUDY``: a published study's MLflow runs into a store, for ``mlflow ui`` to show."""

from __future__ import annotations

from pathlib import Path

from pedtune import console
from pedtune.config.schema import MlflowConfig
from pedtune.published import imported_experiment
from pedtune.tracking.export import import_runs, read_export
from pedtune.tracking.store import open_store

log = console.get(__name__)
RUNS_EXPORT = Path("mlflow/runs.json")  # in a published study's folder (pedtune.publish writes it)


def import_study(study: Path, mlflow: MlflowConfig, tracking_uri: str | None = None,
                 experiment: str | None = None) -> int:
    """Import ``study``'s runs into the experiment ``published-<folder name>`` (or ``experiment``) of the store
    ``tracking_uri`` (default: ``mlflow``'s); how many runs were new."""
    exported = read_export(study / RUNS_EXPORT)
    name = experiment or imported_experiment(study)
    changes = {"experiment": name, **({"tracking_uri": tracking_uri} if tracking_uri else {})}
    store = open_store(mlflow.model_copy(update=changes))
    added = import_runs(store, exported)
    skipped = len(exported["runs"]) - added
    console.summary(log, f"imported {added} MLflow runs of {study} into experiment {name!r} of {store.tracking_uri}"
                         + (f" ({skipped} were there already)" if skipped else ""),
                    look=[console.mlflow_ui_command(store.tracking_uri)])
    return added
