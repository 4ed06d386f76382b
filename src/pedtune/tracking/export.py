"""A study's MLflow runs as one JSON file, and back into a store: what a published study carries of MLflow.

:func:`export_runs` writes each run's name, status, times, params, tags and every metric's full
history (step, timestamp, value); no artifacts, so no model files. :func:`import_runs` recreates
them in any store (``pedtune import-runs``), in an experiment of their own (``published-<study>``), with the parent links
pointing at the new runs: ``mlflow ui`` then shows them as the study's store did. An imported
run's ``pedtune.published_run_id`` tag names the run it copies, so importing twice adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, ViewType

from pedtune.errors import PedtuneError
from pedtune.published import IMPORTED_RUN_TAG
from pedtune.tracking.store import TAG_PARENT, Store

FORMAT = 1
# MLflow's own bookkeeping tags that name things of the exporting store (its user, its artifacts).
_LEFT_OUT_TAGS = ("mlflow.user", "mlflow.log-model.history", "mlflow.runName")  # the name is run_name
# MLflow's limits per log_batch call.
_BATCH = {"metrics": 1000, "params": 100, "tags": 100}


class RunsExportError(PedtuneError):
    """An export file that is missing, malformed, or of another format."""


def _children(store: Store, parent_id: str) -> list[Run]:
    return list(store.client.search_runs([store.experiment_id], f"tags.`{TAG_PARENT}` = '{parent_id}'",
                                         max_results=1000, order_by=["attributes.start_time ASC"]))


def _exported(store: Store, run: Run) -> dict[str, Any]:
    history = {key: [[m.step, m.timestamp, m.value] for m in store.client.get_metric_history(run.info.run_id, key)]
               for key in sorted(run.data.metrics)}
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": dict(sorted(run.data.params.items())),
        "tags": {key: value for key, value in sorted(run.data.tags.items()) if key not in _LEFT_OUT_TAGS},
        "metrics": history,
    }


def export_runs(store: Store, parent_ids: Iterable[str]) -> dict[str, Any]:
    """The runs ``parent_ids`` name and all their child runs, parents first."""
    runs = []
    for parent_id in parent_ids:
        parent = store.client.get_run(parent_id)
        runs += [_exported(store, parent), *(_exported(store, child) for child in _children(store, parent_id))]
    return {"format": FORMAT, "experiment": store.experiment_name, "runs": runs}


def read_export(path: Path) -> dict[str, Any]:
    try:
        exported = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunsExportError(f"{path} does not exist: is this a folder `pedtune publish` wrote?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunsExportError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(exported, dict) or exported.get("format") != FORMAT or not isinstance(exported.get("runs"), list):
        raise RunsExportError(f"{path} is not an MLflow export of format {FORMAT} written by `pedtune publish`")
    return exported


def _chunks(items: list, size: int) -> Iterable[list]:
    return (items[start : start + size] for start in range(0, len(items), size))


def _imported_ids(store: Store, experiment_id: str) -> dict[str, str]:
    """Source run id -> imported run id, for the runs already imported into ``experiment_id``."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = store.client.search_runs([experiment_id], f"tags.`{IMPORTED_RUN_TAG}` != ''", ViewType.ACTIVE_ONLY,
                                        max_results=1000, page_token=token)
        found.update({run.data.tags[IMPORTED_RUN_TAG]: run.info.run_id for run in page})
        token = page.token
        if not token:
            return found


def import_runs(store: Store, exported: dict[str, Any]) -> int:
    """Recreate the exported runs in ``store``'s experiment; how many were new (a run imported before is skipped)."""
    new_ids = _imported_ids(store, store.experiment_id)
    added = 0
    for run in exported["runs"]:  # parents first: a child's parent is imported before it
        if run["run_id"] in new_ids:
            continue
        tags = {**run["tags"], IMPORTED_RUN_TAG: run["run_id"]}
        if TAG_PARENT in tags:
            tags[TAG_PARENT] = new_ids.get(tags[TAG_PARENT], tags[TAG_PARENT])
        run_id = store.client.create_run(store.experiment_id, start_time=run["start_time"], tags=tags,
                                         run_name=run["run_name"]).info.run_id
        params = [Param(key, value) for key, value in run["params"].items()]
        metrics = [Metric(key, value, timestamp, step) for key, points in run["metrics"].items()
                   for step, timestamp, value in points]
        for batch in _chunks(params, _BATCH["params"]):
            store.client.log_batch(run_id, params=batch)
        for batch in _chunks(metrics, _BATCH["metrics"]):
            store.client.log_batch(run_id, metrics=batch)
        store.client.set_terminated(run_id, status=run["status"], end_time=run["end_time"])
        new_ids[run["run_id"]] = run_id
        added += 1
    return added
