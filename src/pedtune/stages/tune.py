"""The ``tune`` stage: a Ray Tune search over ``tune.search_space``, tracked in MLflow, resumable.

Each trial trains with :func:`pedtune.engine.train.fit` on the train part of the split and
is scored on the val part after every epoch. The sweep lives in ``<storage_path>/sweep-<id>``
(see :mod:`pedtune.tune.identity`): running the stage again after an interruption restores
it there, and a changed configuration gets a new folder and a new MLflow parent run.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from ray import tune
from ray.tune import ResultGrid

from pedtune import console, paths
from pedtune.config import StudyConfig, flatten, run_params
from pedtune.data.dataset import SampleSet
from pedtune.engine.train import fit
from pedtune.errors import PedtuneError
from pedtune.ray_cluster import check_authenticated, check_capacity, check_shared_folder, ray_session
from pedtune.stages.inputs import StageInputs, read_inputs
from pedtune.tracking.record import write_run_record
from pedtune.tracking.store import Store, log_metrics, open_store, source_tags
from pedtune.tune.identity import sweep_id
from pedtune.tune.importance import Importance, importance_mlflow, importance_summary, param_importance
from pedtune.tune.outputs import CURVES_CSV, summary_table, tune_metrics, write_outputs
from pedtune.tune.progress import SweepProgress
from pedtune.tune.results import (
    TrialRecord,
    best_trial,
    collect_trials,
    saved_trials,
    sweep_finished,
    trial_dirname,
    trial_retries,
)
from pedtune.tracking.sweep import (
    SweepLoggerCallback,
    finished_parent_run,
    mark_stale_trial_runs,
    reconcile_trial_runs,
    sweep_run,
)
from pedtune.tune.searchers import build_scheduler, build_search_alg, n_initial_points
from pedtune.tune.space import param_space
from pedtune.tune.storage import STAGING_FOLDER, SweepStorage, checkpoint_staging, open_storage
from pedtune.tune.trainable import FitFn, train_trial
from pedtune.units import duration


log = console.get(__name__)
WALL_TIME_FILE = "pedtune_wall_time.json"  # in the sweep's folder, beside Tune's own state
# How often the running driver records the sweep's wall time: what a SIGKILL can lose.
WALL_TIME_EVERY_S = 15.0


class SweepError(PedtuneError):
    """The sweep ran but produced no usable trial."""


@dataclass(frozen=True)
class TrialInputs:
    """What every trial shares: the decoded split, the starting weights, the training function."""

    train_samples: SampleSet
    val_samples: SampleSet
    pretrained: dict[str, torch.Tensor]
    fit_fn: FitFn


def _trial_inputs(inputs: StageInputs, fit_fn: FitFn) -> TrialInputs:
    return TrialInputs(inputs.samples("train"), inputs.samples("val"), inputs.pretrained(), fit_fn)


def parent_tags(config: StudyConfig, dataset_hash: str) -> dict[str, str]:
    return {
        "searcher": config.tune.searcher,
        "scheduler": config.tune.scheduler,
        **source_tags(),
        "dataset_hash": dataset_hash,
    }


def parent_params(config: StudyConfig) -> dict[str, Any]:
    """The budget, space and searcher/scheduler settings as run (defaults resolved), and the base config."""
    settings = config.tune.model_dump()
    settings["n_initial_points"] = n_initial_points(config.tune)
    settings["asha"]["max_t"] = config.asha_max_t
    return {**flatten(settings, "tune."), **run_params(config)}


def _trainable(config: StudyConfig, inputs: TrialInputs, storage: SweepStorage, experiment: str) -> Any:
    # with_parameters puts the decoded samples and weights into Ray's object store once;
    # every trial reads them from there instead of decoding the dataset again.
    trainable = tune.with_parameters(
        train_trial, base=config, train_samples=inputs.train_samples, val_samples=inputs.val_samples,
        pretrained=inputs.pretrained, fit_fn=inputs.fit_fn, checkpoint_staging=checkpoint_staging(storage, experiment),
    )
    resources = config.tune.resources_per_trial
    return tune.with_resources(trainable, {"cpu": resources.cpu, "gpu": resources.gpu})


def _new_tuner(
    config: StudyConfig, trainable: Any, storage: SweepStorage, experiment: str, callback: SweepLoggerCallback
) -> tune.Tuner:
    # Tune saves the callbacks with the sweep: a resumed sweep runs these same ones.
    return tune.Tuner(
        trainable,
        param_space=param_space(config.tune.search_space),
        tune_config=tune.TuneConfig(
            metric=config.tune.metric,
            mode=config.tune.mode,
            search_alg=build_search_alg(config),
            scheduler=build_scheduler(config),
            num_samples=config.tune.num_samples,
            reuse_actors=True,  # saves the ~2 s start-up of a fresh worker per trial
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage.root,
            storage_filesystem=storage.filesystem,  # local: checkpoints are linked into it, not copied
            callbacks=[callback, SweepProgress(config)],
            failure_config=tune.FailureConfig(max_failures=config.tune.max_failures, fail_fast=False),
            # Only the latest epoch's state is needed to resume a trial. Tune deletes the one before it
            # as it registers a new one and then uploads its snapshot: in object storage, a driver
            # killed in between would resume from a deleted checkpoint, so the one before stays too.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1 if storage.local else 2),
            verbose=0,  # SweepProgress reports each trial's end, the best so far and an ETA instead
        ),
    )


def prune_checkpoints(storage: SweepStorage, experiment: str) -> None:
    """Delete the trials' checkpoints of a finished sweep.

    Each holds a model with its optimizer state (sizes: docs/performance.md): only an
    unfinished trial resumes from one, and the evaluate stage
    retrains the best configuration rather than reusing a trial's weights.
    """
    for trial in storage.names(storage.path(experiment)):
        for name in storage.names(storage.path(experiment, trial)) if trial.startswith("trial_") else []:
            if name.startswith("checkpoint_"):
                storage.delete_dir(storage.path(experiment, trial, name))
    storage.delete_dir(storage.path(experiment, STAGING_FOLDER))


def sweep_seconds(storage: SweepStorage, experiment: str) -> float:
    """Wall time spent on this sweep by earlier runs of the stage (0 for a new sweep)."""
    try:
        return float(storage.read_json(storage.path(experiment, WALL_TIME_FILE))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):  # OSError: absent (FileNotFoundError locally)
        return 0.0


def record_sweep_seconds(storage: SweepStorage, experiment: str, seconds: float) -> None:
    if storage.exists(storage.path(experiment)):  # absent when the stage failed before Tune created it
        storage.write_json(storage.path(experiment, WALL_TIME_FILE), {"seconds": round(seconds, 1)})


@contextmanager
def recording_wall_time(storage: SweepStorage, experiment: str, wall_time_s: Callable[[], float]) -> Iterator[None]:
    """Record the sweep's wall time every WALL_TIME_EVERY_S while the block runs, and once when it ends.

    A driver killed without a chance to clean up (SIGKILL, a lost head node) then loses at
    most that interval of the sweep's cost instead of all of this run's.
    """
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(WALL_TIME_EVERY_S):
            try:
                record_sweep_seconds(storage, experiment, wall_time_s())
            except OSError as error:  # a storage hiccup must not end the sweep; the final write retries
                log.warning(f"could not record the sweep's wall time: {error}")

    ticker = threading.Thread(target=tick, name="wall-time-ledger", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        record_sweep_seconds(storage, experiment, wall_time_s())


def restorable(storage: SweepStorage, experiment: str) -> bool:
    """Whether Tune can continue the sweep: it needs tuner.pkl and a saved experiment state.

    A driver killed between creating the Tuner and Tune's first snapshot leaves only the
    former, which Tuner.restore rejects; nothing in such a folder is worth keeping.
    """
    path = storage.path(experiment)
    return tune.Tuner.can_restore(path, storage_filesystem=storage.filesystem) and any(
        name.startswith("experiment_state-") and name.endswith(".json") for name in storage.names(path)
    )


def _check_cluster(config: StudyConfig, storage: SweepStorage) -> None:
    """What would otherwise fail (or wait) only once trials are placed: room for one, and reachable storage."""
    check_capacity(config.tune.resources_per_trial, "trial", config.tune.ray_address)
    if config.tune.ray_address and storage.local:
        check_shared_folder(storage.root, "tune.storage_path")


def _restore(storage: SweepStorage, experiment: str, trainable: Any) -> tune.Tuner:
    # Errored trials stay errored: a diverging config would only diverge again.
    return tune.Tuner.restore(storage.path(experiment), trainable=trainable, resume_unfinished=True,
                              resume_errored=False, storage_filesystem=storage.filesystem)


def _run_sweep(
    config: StudyConfig,
    storage: SweepStorage,
    experiment: str,
    trainable: Any,
    callback: SweepLoggerCallback,
    wall_time_s: Callable[[], float],
) -> ResultGrid:
    if restorable(storage, experiment):
        log.info(f"resuming the sweep in {storage.describe(experiment)}")
        tuner = _restore(storage, experiment, trainable)
    else:
        log.info(f"starting a sweep of {config.tune.num_samples} trials in {storage.describe(experiment)}")
        storage.delete_dir(storage.path(experiment))
        tuner = _new_tuner(config, trainable, storage, experiment, callback)
    # Tune prints its experiment's set-up and end to stdout whatever its verbosity.
    quiet = contextlib.redirect_stdout(io.StringIO()) if console.quiet() else contextlib.nullcontext()
    with recording_wall_time(storage, experiment, wall_time_s), quiet:
        return tuner.fit()


def _concluded_run(store: Store, sid: str, storage: SweepStorage, experiment: str, num_samples: int) -> str | None:
    """The parent run of a sweep that finished and was tracked to its end (None otherwise): re-read, not resumed."""
    if not restorable(storage, experiment) or not sweep_finished(saved_trials(storage, experiment), num_samples):
        return None
    return finished_parent_run(store, sid)


def _log_outcome(store: Store, run_id: str, metrics: dict[str, Any], importance: Importance) -> None:
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    log_metrics(store, run_id, {**numbers, **importance_mlflow(importance)}, step=0)
    store.client.log_artifacts(run_id, str(paths.TUNE_DIR), artifact_path="tune")
    for path in (CURVES_CSV, paths.TUNE_METRICS):
        store.client.log_artifact(run_id, str(path), artifact_path="tune")


def _conclude(
    config: StudyConfig, records: list[TrialRecord], wall_time_s: float
) -> tuple[TrialRecord, dict, Importance]:
    best = best_trial(records)
    params = [dist.param for dist in config.tune.search_space]
    if not console.quiet():
        print(summary_table(records, best, params, config.tune.metric), flush=True)
    if best is None:
        raise SweepError(f"all {len(records)} trials failed; the table above lists their errors")
    importance = param_importance(records, config.tune.search_space, config.tune.metric)
    if not console.quiet():
        print(importance_summary(importance), flush=True)
    write_outputs(config, records, best, wall_time_s, importance)
    return best, tune_metrics(records, best, wall_time_s, importance), importance


def _reread(config: StudyConfig, storage: SweepStorage, experiment: str, trainable: Any,
            wall_time_s: Callable[[], float]) -> tuple[list[TrialRecord], TrialRecord, dict[str, Any]]:
    """A finished sweep's outputs written again from its saved state; nothing trains, nothing reaches MLflow."""
    records = collect_trials(_restore(storage, experiment, trainable).get_results(), config,
                             trial_retries(saved_trials(storage, experiment)))
    best, metrics, _ = _conclude(config, records, wall_time_s())
    record_sweep_seconds(storage, experiment, wall_time_s())
    return records, best, metrics


def _tracked_sweep(
    config: StudyConfig, store: Store, storage: SweepStorage, sid: str, trainable: Any, dataset_hash: str,
    wall_time_s: Callable[[], float],
) -> tuple[str, list[TrialRecord], TrialRecord, dict[str, Any]]:
    """Run or resume the sweep under its MLflow parent run (created, or reopened), and conclude it."""
    experiment = f"sweep-{sid}"
    tags, params = parent_tags(config, dataset_hash), parent_params(config)
    with sweep_run(store, sid, f"tune sweep-{sid}", tags, params) as (parent_id, resumed):
        if resumed:
            mark_stale_trial_runs(store, parent_id)
        callback = SweepLoggerCallback(store, sid, config.tune.search_space, config.tune.metric)
        grid = _run_sweep(config, storage, experiment, trainable, callback, wall_time_s)
        trials = saved_trials(storage, experiment)
        if not sweep_finished(trials, config.tune.num_samples):
            # Tune caught the Ctrl-C and returned; its unfinished trials' runs end KILLED.
            mark_stale_trial_runs(store, parent_id)
            log.warning(f"interrupted; run `pedtune tune` again to resume the sweep in {storage.describe(experiment)}")
            raise KeyboardInterrupt
        records = collect_trials(grid, config, trial_retries(trials))
        prune_checkpoints(storage, experiment)
        reconcile_trial_runs(store, parent_id, records)
        best, metrics, importance = _conclude(config, records, wall_time_s())
        record_sweep_seconds(storage, experiment, wall_time_s())
        _log_outcome(store, parent_id, metrics, importance)
    return parent_id, records, best, metrics


def run_tune(config: StudyConfig, fit_fn: FitFn = fit) -> dict[str, Any]:
    """Run (or resume) the sweep, write ``results/tune``, ``plots/tune``, ``metrics/tune.json``.

    ``fit_fn`` is the training function each trial calls; tests swap in a cheap one.
    Returns the content of ``metrics/tune.json``.
    """
    check_authenticated(config.tune)
    store = open_store(config.mlflow)  # before Ray and the data: a bad URI fails in seconds
    storage = open_storage(config.tune.storage_path)
    # Each epoch's checkpoint forces an experiment snapshot (so a resume never points at a
    # deleted checkpoint); with short epochs Ray warns about that on every epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.perf_counter()
    # Trials' own output (per-step losses) stays in their logs under the experiment folder;
    # Tune's progress table and its reports of failed trials still reach the console.
    with ray_session(config.tune.ray_address, log_to_driver=False):
        # Every check that can refuse the stage runs before any MLflow run is opened or reopened:
        # a refused attempt leaves an earlier sweep's runs as they were.
        _check_cluster(config, storage)
        # Absolute: trials run in their own working folder, and an uncached sample set reads lazily.
        stage_inputs = read_inputs(config, absolute=True)
        sid = sweep_id(config, stage_inputs.dataset_hash)
        experiment = f"sweep-{sid}"
        trainable = _trainable(config, _trial_inputs(stage_inputs, fit_fn), storage, experiment)
        # The sweep's wall time adds up every run of the stage on it: an interrupted and resumed
        # sweep, or a finished one re-read after a change to this driver, reports the whole cost.
        earlier_s = sweep_seconds(storage, experiment) if restorable(storage, experiment) else 0.0

        def wall_time_s() -> float:
            return earlier_s + time.perf_counter() - started

        parent_id = _concluded_run(store, sid, storage, experiment, config.tune.num_samples)
        if parent_id is not None:
            log.info(f"the sweep in {storage.describe(experiment)} finished: writing its outputs again from its "
                     f"saved state; its MLflow runs stay as they are")
            records, best, metrics = _reread(config, storage, experiment, trainable, wall_time_s)
        else:
            parent_id, records, best, metrics = _tracked_sweep(config, store, storage, sid, trainable,
                                                               stage_inputs.dataset_hash, wall_time_s)
        write_run_record(paths.STAGE_RUNS["tune"], "tune", parent_id, store.experiment_name)
    console.summary(
        log,
        f"best val {config.tune.metric} {best.final:.4f} (trial {best.trial_id}) of {len(records)} trials in "
        f"{duration(metrics['wall_time_s'])}; {paths.BEST_PARAMS} holds its train section",
        wrote=[paths.TUNE_DIR, CURVES_CSV, paths.TUNE_METRICS],
        look=console.views(store.tracking_uri, parent_id),
    )
    return metrics
