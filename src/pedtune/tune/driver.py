"""The ``tune`` stage: a Ray Tune search over ``tune.search_space``, tracked in MLflow, resumable.

Each trial trains with :func:`pedtune.engine.train.fit` on the train part of the split and
is scored on the val part after every epoch. The sweep lives in ``<storage_path>/sweep-<id>``
(see :mod:`pedtune.tune.identity`): running the stage again after an interruption restores
it there, and a changed configuration gets a new folder and a new MLflow parent run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune import ResultGrid

from pedtune import console, paths
from pedtune.config import ConfigError, StudyConfig, flatten
from pedtune.data.dataset import SampleStore, open_store
from pedtune.data.split import Split, read_split
from pedtune.engine.estimate import CPU_PATH
from pedtune.engine.train import fit
from pedtune.errors import PedtuneError
from pedtune.io import write_json
from pedtune.model.weights import load_weights
from pedtune.tracking.store import Store, log_metrics, open_store as open_mlflow, source_tags
from pedtune.train import run_params
from pedtune.tune.identity import sweep_id
from pedtune.tune.importance import Importance, importance_mlflow, importance_summary, param_importance
from pedtune.tune.outputs import BEST_PARAMS, CURVES_CSV, summary_table, tune_metrics, write_outputs
from pedtune.tune.progress import SweepProgress
from pedtune.tune.results import TrialRecord, best_trial, collect_trials, sweep_finished, trial_dirname
from pedtune.tune.searchers import build_scheduler, build_search_alg, n_initial_points
from pedtune.tune.space import param_space
from pedtune.tune.storage import checkpoint_staging, linking_filesystem
from pedtune.tune.trainable import FitFn, train_trial
from pedtune.tune.tracking import SweepLoggerCallback, mark_stale_trial_runs, reconcile_trial_runs, sweep_run


log = console.get(__name__)
WALL_TIME_FILE = "pedtune_wall_time.json"  # in the sweep's folder, beside Tune's own state


class SweepError(PedtuneError):
    """The sweep ran but produced no usable trial."""


@dataclass(frozen=True)
class TrialInputs:
    """What every trial shares: the decoded split, the starting weights, the training function."""

    train_store: SampleStore
    val_store: SampleStore
    pretrained: dict[str, torch.Tensor]
    fit_fn: FitFn


def _trial_inputs(config: StudyConfig, split: Split, fit_fn: FitFn) -> TrialInputs:
    size = (config.model.min_size, config.model.max_size)
    # Absolute: trials run in their own working folder, and an uncached store reads lazily.
    root = paths.DATA_ROOT.resolve()
    return TrialInputs(
        train_store=open_store(root, split.train, *size, config.data.cache, "train split"),
        val_store=open_store(root, split.val, *size, config.data.cache, "val split"),
        pretrained=load_weights(paths.PRETRAINED, config.model),
        fit_fn=fit_fn,
    )


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


def _check_resources(config: StudyConfig) -> None:
    # Tune would wait forever for a trial that no node of a fixed local cluster can hold.
    if config.tune.ray_address:
        return
    want = config.tune.resources_per_trial
    have = ray.cluster_resources()
    if want.cpu > have.get("CPU", 0) or want.gpu > have.get("GPU", 0):
        raise ConfigError(
            f"tune.resources_per_trial asks for {want.cpu:g} CPU and {want.gpu:g} GPU per trial, but this "
            f"machine offers {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU. Lower them to fit, or "
            f"on a CPU, {CPU_PATH}."
        )


def _trainable(config: StudyConfig, inputs: TrialInputs, experiment_dir: Path) -> Any:
    # with_parameters puts the decoded samples and weights into Ray's object store once;
    # every trial reads them from there instead of decoding the dataset again.
    trainable = tune.with_parameters(
        train_trial, base=config, train_store=inputs.train_store, val_store=inputs.val_store,
        pretrained=inputs.pretrained, fit_fn=inputs.fit_fn, checkpoint_staging=checkpoint_staging(experiment_dir),
    )
    resources = config.tune.resources_per_trial
    return tune.with_resources(trainable, {"cpu": resources.cpu, "gpu": resources.gpu})


def _new_tuner(config: StudyConfig, trainable: Any, experiment_dir: Path, callback: SweepLoggerCallback) -> tune.Tuner:
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
            name=experiment_dir.name,
            storage_path=str(experiment_dir.parent),
            storage_filesystem=linking_filesystem(),  # checkpoints are linked into it, not copied
            callbacks=[callback, SweepProgress(config)],
            failure_config=tune.FailureConfig(max_failures=config.tune.max_failures, fail_fast=False),
            # Only the latest epoch's state is needed to resume a trial.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,  # SweepProgress reports each trial's end, the best so far and an ETA instead
        ),
    )


def prune_checkpoints(experiment_dir: Path) -> None:
    """Delete the trials' checkpoints of a finished sweep.

    Each holds a model with its optimizer state (sizes: docs/performance.md): only an
    unfinished trial resumes from one, and the evaluate stage
    retrains the best configuration rather than reusing a trial's weights.
    """
    for folder in [*experiment_dir.glob("*/checkpoint_*"), checkpoint_staging(experiment_dir)]:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_seconds(experiment_dir: Path) -> float:
    """Wall time spent on this sweep by earlier runs of the stage (0 for a new sweep)."""
    try:
        return float(json.loads((experiment_dir / WALL_TIME_FILE).read_text(encoding="utf-8"))["seconds"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0.0


def record_sweep_seconds(experiment_dir: Path, seconds: float) -> None:
    if experiment_dir.is_dir():  # absent when the stage failed before Tune created it
        write_json(experiment_dir / WALL_TIME_FILE, {"seconds": round(seconds, 1)})


def restorable(experiment_dir: Path) -> bool:
    """Whether Tune can continue the sweep: it needs tuner.pkl and a saved experiment state.

    A driver killed between creating the Tuner and Tune's first snapshot leaves only the
    former, which Tuner.restore rejects; nothing in such a folder is worth keeping.
    """
    return tune.Tuner.can_restore(str(experiment_dir), storage_filesystem=linking_filesystem()) and any(
        experiment_dir.glob("experiment_state-*.json")
    )


def _run_sweep(
    config: StudyConfig, experiment_dir: Path, inputs: TrialInputs, callback: SweepLoggerCallback
) -> ResultGrid:
    # Each epoch's checkpoint forces an experiment snapshot (so a resume never points at a
    # deleted checkpoint); with short epochs Ray warns about that on every epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Trials' own output (per-step losses) stays in their logs under the experiment folder;
    # Tune's progress table and its reports of failed trials still reach the console.
    ray.init(address=config.tune.ray_address or None, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        _check_resources(config)
        trainable = _trainable(config, inputs, experiment_dir)
        if restorable(experiment_dir):
            log.info(f"resuming the sweep in {experiment_dir}")
            # Errored trials stay errored: a diverging config would only diverge again.
            tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, storage_filesystem=linking_filesystem())
        else:
            log.info(f"starting a sweep of {config.tune.num_samples} trials in {experiment_dir}")
            shutil.rmtree(experiment_dir, ignore_errors=True)
            tuner = _new_tuner(config, trainable, experiment_dir, callback)
        # Tune prints its experiment's set-up and end to stdout whatever its verbosity.
        with contextlib.redirect_stdout(io.StringIO()) if console.quiet() else contextlib.nullcontext():
            return tuner.fit()
    finally:
        ray.shutdown()


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


def run_tune(config: StudyConfig, fit_fn: FitFn = fit) -> dict[str, Any]:
    """Run (or resume) the sweep, write ``results/tune``, ``plots/tune``, ``metrics/tune.json``.

    ``fit_fn`` is the training function each trial calls; tests swap in a cheap one.
    Returns the content of ``metrics/tune.json``.
    """
    store = open_mlflow(config.mlflow)  # before Ray and the data: a bad URI fails in seconds
    split, dataset_hash = read_split(paths.SPLIT_FILE)
    inputs = _trial_inputs(config, split, fit_fn)
    sid = sweep_id(config, dataset_hash)
    experiment_dir = Path(config.tune.storage_path).resolve() / f"sweep-{sid}"
    # The sweep's wall time adds up every run of the stage on it: an interrupted and resumed
    # sweep, or a finished one re-read after a change to this driver, reports the whole cost.
    earlier_s = sweep_seconds(experiment_dir) if restorable(experiment_dir) else 0.0
    started = time.perf_counter()

    def wall_time_s() -> float:
        return earlier_s + time.perf_counter() - started

    tags, params = parent_tags(config, dataset_hash), parent_params(config)
    try:
        with sweep_run(store, sid, f"tune sweep-{sid}", tags, params) as (parent_id, resumed):
            if resumed:
                mark_stale_trial_runs(store, parent_id)
            callback = SweepLoggerCallback(store, sid, config.tune.search_space, config.tune.metric)
            grid = _run_sweep(config, experiment_dir, inputs, callback)
            if not sweep_finished(experiment_dir, config.tune.num_samples):
                # Tune caught the Ctrl-C and returned; its unfinished trials' runs end KILLED.
                mark_stale_trial_runs(store, parent_id)
                log.warning(f"interrupted; run `pedtune tune` again to resume the sweep in {experiment_dir}")
                raise KeyboardInterrupt
            records = collect_trials(grid, config)
            prune_checkpoints(experiment_dir)
            reconcile_trial_runs(store, parent_id, records)
            best, metrics, importance = _conclude(config, records, wall_time_s())
            _log_outcome(store, parent_id, metrics, importance)
    finally:
        record_sweep_seconds(experiment_dir, wall_time_s())  # also when interrupted or failed
    console.summary(
        log,
        f"best val {config.tune.metric} {best.final:.4f} (trial {best.trial_id}) of {len(records)} trials in "
        f"{console.duration(metrics['wall_time_s'])}; {paths.TUNE_DIR / BEST_PARAMS} holds its train section",
        wrote=[paths.TUNE_DIR, CURVES_CSV, paths.TUNE_METRICS],
        look=console.views(store.tracking_uri, parent_id),
    )
    return metrics
