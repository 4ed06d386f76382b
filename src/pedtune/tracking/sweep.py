"""MLflow for a sweep: one parent run, one child run per trial, both surviving an interrupted driver.

The parent is found again by its ``sweep_id`` tag and a trial's child run by its ``trial_id``
tag, so a resumed sweep appends to the runs it started instead of duplicating them. Ray
pickles the logger callback into the experiment folder and restores that copy on resume.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.tracking import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT, TRAINING_ITERATION, TRIAL_ID

from pedtune.config.schema import Distribution
from pedtune.tracking.store import TAG_PARENT, Store, ending_run, log_params, provenance
from pedtune.tune.results import ERROR, TrialRecord
from pedtune.tune.space import decode_sample

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

TAG_STAGE = "stage"
TAG_SWEEP = "sweep_id"
TAG_TRIAL = "trial_id"
TAG_OUTCOME = "trial_outcome"
TAG_INITIAL = "initial_config"
RUNNING = RunStatus.to_string(RunStatus.RUNNING)
FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)

# Ray's bookkeeping in every result (ids, pid, host, timestamps, the echoed config, ...);
# "epoch" is the step already. Keys starting with "time_" are Ray's timers too.
RAY_RESULT_KEYS = frozenset(AUTO_RESULT_KEYS) | {DONE, TRIAL_ID, EXPERIMENT_TAG, SHOULD_CHECKPOINT, "epoch"}


def trial_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics the trainable reported, without Ray's bookkeeping."""
    return {
        key: float(value)
        for key, value in result.items()
        if key not in RAY_RESULT_KEYS
        and not key.startswith("time_")
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


def _search(store: Store, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = store.client.search_runs(
            [store.experiment_id], filter_string, max_results=1000, order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent_run(store: Store, sweep_id: str) -> str | None:
    runs = _search(store, f"tags.{TAG_SWEEP} = '{sweep_id}' and tags.{TAG_STAGE} = 'tune'")
    return runs[0].info.run_id if runs else None


def finished_parent_run(store: Store, sweep_id: str) -> str | None:
    """The sweep's parent run if it ended FINISHED: a sweep the stage tracked to its end."""
    run_id = find_parent_run(store, sweep_id)
    if run_id is None or store.client.get_run(run_id).info.status != FINISHED:
        return None
    return run_id


def trial_runs(store: Store, parent_run_id: str) -> list[Run]:
    return _search(store, f"tags.`{TAG_PARENT}` = '{parent_run_id}'")


def find_trial_run(store: Store, parent_run_id: str, trial_id: str) -> Run | None:
    runs = _search(store, f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.{TAG_TRIAL} = '{trial_id}'")
    return runs[0] if runs else None


@contextmanager
def sweep_run(
    store: Store, sweep_id: str, name: str, tags: Mapping[str, str], params: Mapping[str, Any]
) -> Iterator[tuple[str, bool]]:
    """Yield ``(parent run id, resumed)``: the sweep's run, reopened if it exists, else created.

    Ends FINISHED, FAILED, or KILLED on an interrupt, like ``tracked_run``.
    """
    run_id = find_parent_run(store, sweep_id)
    resumed = run_id is not None
    if run_id is None:
        run_id = store.client.create_run(
            store.experiment_id, run_name=name, tags={**tags, TAG_STAGE: "tune", TAG_SWEEP: sweep_id}
        ).info.run_id
        log_params(store, run_id, params)
    else:
        store.client.update_run(run_id, status=RUNNING)
    with ending_run(store, run_id):
        yield run_id, resumed


def mark_stale_trial_runs(store: Store, parent_run_id: str) -> None:
    """Trial runs an interrupted or killed driver left RUNNING end KILLED; a trial that continues reopens its run."""
    for run in trial_runs(store, parent_run_id):
        if run.info.status == RUNNING:
            store.client.set_terminated(run.info.run_id, status=KILLED)


def reconcile_trial_runs(store: Store, parent_run_id: str, records: list[TrialRecord]) -> None:
    """Make the child runs match the finished sweep: one per trial, with its final status.

    A run whose trial is not in the sweep was started by a driver killed before Ray saved
    that trial; the restored searcher proposed it again under a new id, so it is deleted.
    """
    by_id = {record.trial_id: record for record in records}
    for run in trial_runs(store, parent_run_id):
        record = by_id.get(run.data.tags.get(TAG_TRIAL, ""))
        if record is None:
            store.client.delete_run(run.info.run_id)
            continue
        status = FAILED if record.status == ERROR else FINISHED
        if run.info.status != status:
            store.client.set_terminated(run.info.run_id, status=status)
        store.client.set_tag(run.info.run_id, TAG_OUTCOME, record.status)
        store.client.set_tag(run.info.run_id, TAG_INITIAL, str(record.is_initial).lower())


class SweepLoggerCallback(MLflowLoggerCallback):
    """Ray's MLflow logger, made resumable and limited to the trial's own params and metrics.

    Params are the trial's quantized, typed ``train.*`` values (what it trained with, not the
    searcher's raw proposal); metrics are logged with step = epoch (= training_iteration).
    """

    def __init__(self, store: Store, sweep_id: str, space: list[Distribution], metric: str) -> None:
        super().__init__(
            tracking_uri=store.tracking_uri,
            experiment_name=store.experiment_name,
            tags={TAG_SWEEP: sweep_id},
            save_artifact=False,
        )
        self.sweep_id = sweep_id
        self.space = list(space)
        self.metric = metric

    def setup(self, *args: Any, **kwargs: Any) -> None:
        super().setup(*args, **kwargs)
        self._store = Store(
            MlflowClient(tracking_uri=self.tracking_uri),
            self.tracking_uri,
            str(self.mlflow_util.experiment_id),
            str(self.experiment_name),
        )
        # Looked up here rather than passed in: on resume Ray runs the copy of this callback
        # pickled at the sweep's start, and the parent run may have been recreated since.
        parent_run_id = find_parent_run(self._store, self.sweep_id)
        if parent_run_id is None:
            raise RuntimeError(f"no MLflow parent run tagged {TAG_SWEEP}={self.sweep_id}")
        self.parent_run_id = parent_run_id
        parent_tags = self._store.client.get_run(parent_run_id).data.tags
        self.tags = {**self.tags, **provenance(parent_tags), TAG_PARENT: parent_run_id}
        self._logged_epochs: dict[Trial, int] = {}

    def _run_id(self, trial: Trial) -> str:
        if trial not in self._trial_runs:
            self._trial_runs[trial] = self._reopen_run(trial) or self._create_run(trial)
        return self._trial_runs[trial]

    def _reopen_run(self, trial: Trial) -> str | None:
        run = find_trial_run(self._store, self.parent_run_id, trial.trial_id)
        if run is None:
            return None
        self._store.client.update_run(run.info.run_id, status=RUNNING)
        history = self._store.client.get_metric_history(run.info.run_id, self.metric)
        self._logged_epochs[trial] = max((int(m.step) for m in history), default=0)
        return run.info.run_id

    def _create_run(self, trial: Trial) -> str:
        overrides = decode_sample(trial.config, self.space)
        tags = {**self.tags, TAG_TRIAL: trial.trial_id, "trial_name": str(trial)}
        run_id = self._store.client.create_run(
            self._store.experiment_id, run_name=str(trial), tags=tags
        ).info.run_id
        self._store.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in overrides.items()])
        return run_id

    def log_trial_start(self, trial: Trial) -> None:
        self._run_id(trial)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        epoch = int(result[TRAINING_ITERATION])
        # After a resume, epochs the killed driver already logged are not logged twice.
        if epoch <= self._logged_epochs.get(trial, 0):
            return
        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, epoch) for key, value in trial_metrics(result).items()]
        self._store.client.log_batch(self._run_id(trial), metrics=metrics)
        self._logged_epochs[trial] = epoch

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        self._store.client.set_terminated(self._run_id(trial), status=FAILED if failed else FINISHED)
