"""The ``evaluate`` stage: the params.yaml and the tuned configuration, several seeds each, on the test split.

Every run trains on the ``evaluate.train_on`` part through :func:`pedtune.engine.train.fit`
(which scores the val split after each epoch) and is then scored once on the test split;
no epoch or run is ever chosen by a test score. Outputs are written only after every run
finished, each atomically.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from pedtune import console, paths
from pedtune.config import StudyConfig, flatten, run_params
from pedtune.data.checksum import md5sum
from pedtune.data.dataset import SampleSet
from pedtune.device import resolve_device
from pedtune.evaluate import files
from pedtune.evaluate.configs import read_best_params, read_search_cost, tuned_config, unsearched_differences
from pedtune.evaluate.kept import KeptModel, kept_model
from pedtune.evaluate.parallel import describe_execution, execute
from pedtune.evaluate.pictures import save_per_seed_plot, write_comparison_pictures
from pedtune.evaluate.report import (
    CONFIGS,
    DELTA_METRICS,
    Study,
    compare,
    machine_info,
    metrics_json,
    per_seed_csv,
    report_markdown,
    summary_json,
)
from pedtune.evaluate.runs import INITIAL, TUNED, RunInputs, RunResult, RunSpec, plan_runs, shared_result
from pedtune.evaluate.stats import mean_interval
from pedtune.io import atomic_path, write_json, write_text
from pedtune.model.checkpoint import read_checkpoint, save_model
from pedtune.stages.inputs import StageInputs, read_inputs
from pedtune.tracking.record import write_run_record
from pedtune.tracking.registry import Candidate, Registration, model_metadata, register_model
from pedtune.tracking.store import (
    Store,
    log_metrics,
    log_params,
    open_store,
    provenance,
    source_tags,
    tracked_run,
)
from pedtune.units import duration

log = console.get(__name__)


def run_inputs(inputs: StageInputs) -> RunInputs:
    return RunInputs(train=inputs.samples(inputs.config.evaluate.train_on), val=inputs.samples("val"),
                     test=inputs.samples("test"), pretrained=inputs.pretrained())


def log_run(
    store: Store, parent_id: str, config: StudyConfig, result: RunResult, inherited: Mapping[str, str]
) -> None:
    """One child run: the run's params, fit's per-epoch (val) metrics, then the test scores.

    ``inherited``: the parent's git commit, DVC experiment and dataset hash, which it shares.
    """
    tags = {**inherited, "stage": "evaluate", "config": result.name, "seed": str(result.seed),
            "device": result.device}
    if result.trained_as is not None:
        tags["same_run_as"] = f"{result.trained_as}-seed{result.seed}"
    if result.diverged is not None:
        tags["diverged"] = result.diverged[:5000]  # MLflow's limit on a tag value
    if result.out_of_memory is not None:
        tags["out_of_memory"] = result.out_of_memory[:5000]
    with tracked_run(store, f"{result.name}-seed{result.seed}", tags, parent_run_id=parent_id) as run_id:
        log_params(store, run_id, run_params(config))
        for epoch, metrics in enumerate(result.history, start=1):
            log_metrics(store, run_id, metrics, step=epoch)
        final = {f"test_{name}": value for name, value in result.test.items()}
        log_metrics(store, run_id, {**final, "wall_time_s": result.wall_time_s}, step=len(result.history))
    if result.failure is not None:
        store.client.set_terminated(run_id, status="FAILED")


def write_outputs(study: Study, test_samples: SampleSet, kept: KeptModel, ids: Mapping[int, int]) -> dict[str, Any]:
    """The kept model, the report folder (report, per-seed plot, pictures) as one atomic rename, then metrics and CSV."""
    config = study.configs[INITIAL]
    models = {
        f"{result.name}, seed {result.seed}": result.state_dict
        for result in sorted(study.results, key=lambda r: CONFIGS.index(r.name))
        if result.state_dict is not None
    }
    trained_as = study.configs[kept.config]
    save_model(kept.state_dict, trained_as.model, trained_as.train, test_samples.categories, ids, paths.TUNED_MODEL,
               kept.describe())
    with atomic_path(paths.EVALUATE_DIR) as folder:
        folder.mkdir()
        (folder / files.REPORT.name).write_text(report_markdown(study), encoding="utf-8")
        write_json(folder / files.SUMMARY.name, {**summary_json(study), "kept_model": kept.describe()})
        save_per_seed_plot(folder / files.PER_SEED_PLOT.name, study.comparison.scores, DELTA_METRICS)
        write_comparison_pictures(
            folder / files.PICTURES.name,
            test_samples,
            models,
            config,
            config.evaluate.num_pictures,
            resolve_device(config.train.device),
        )
    metrics = metrics_json(study)
    write_json(paths.EVALUATE_METRICS, metrics)
    write_text(files.PER_SEED_CSV, per_seed_csv(study.results))
    return metrics


def log_outputs(store: Store, run_id: str) -> None:
    store.client.log_artifacts(run_id, str(paths.EVALUATE_DIR))
    for path in (paths.EVALUATE_METRICS, files.PER_SEED_CSV):
        store.client.log_artifact(run_id, str(path))


def register_kept(
    store: Store, run_id: str, study: Study, kept: KeptModel, ids: Mapping[int, int], data_hash: str,
    tags: Mapping[str, str],
) -> Registration:
    """The kept model as a new version of ``mlflow.registered_model``, scored by its configuration's
    test bbox mAP over the seeds (:mod:`pedtune.tracking.registry` moves ``champion`` or says why not)."""
    started = time.perf_counter()
    config = study.configs[kept.config]
    scores = [result.test["bbox_mAP"] for result in study.results if result.name == kept.config and result.test]
    mean, low, high = mean_interval(scores)
    candidate = Candidate(dataset_hash=data_hash, split_hash=md5sum(paths.SPLIT_FILE), test_bbox_map=mean,
                          half_width=(high - low) / 2 if len(scores) > 1 else None)
    checkpoint = read_checkpoint(paths.TUNED_MODEL)
    metadata = model_metadata(checkpoint.categories, ids, config.model.min_size, config.model.max_size,
                              config.evaluate.score_threshold)
    version_tags = {**tags, "config": kept.config, "seed": str(kept.seed), "kept": kept.note[:5000],
                    **{f"param.{key}": str(value) for key, value in run_params(config).items()}}
    registration = register_model(store, run_id, config.mlflow.registered_model, checkpoint.model(), candidate,
                                  metadata, version_tags)
    log_metrics(store, run_id, {"registry_time_s": time.perf_counter() - started,
                                "model_size_bytes": registration.size_bytes}, step=0)
    return registration


def parent_params(config: StudyConfig) -> dict[str, Any]:
    resources = config.tune.resources_per_trial.model_dump()
    return flatten(
        {
            "evaluate": config.evaluate.model_dump(),
            "tune": {"resources_per_trial": resources, "ray_address": config.tune.ray_address},
        }
    )


def run_evaluate(config: StudyConfig) -> dict[str, Any]:
    started = time.perf_counter()
    # Everything that can fail is checked before the first of many long trainings.
    if config.tune.ray_address:
        from pedtune.ray_cluster import check_authenticated  # imports Ray: only where the runs go to a cluster

        check_authenticated(config.tune)
    resolve_device(config.train.device)  # the pictures at the end are drawn here, whatever runs the seeds
    configs = {INITIAL: config, TUNED: tuned_config(config, read_best_params())}
    differences = unsearched_differences(config, configs[TUNED])
    if differences:
        log.warning(
            f"the tuned config also differs where the search does not look: "
            f"{'; '.join(differences)}. The comparison measures these too; if params.yaml changed after "
            "the sweep, run the tune stage again (dvc repro)."
        )
    # When the search kept the initial configuration, a tuned run would repeat the initial run
    # with the same seed; each seed is trained once and its result serves both columns.
    shared = configs[TUNED].train == configs[INITIAL].train
    specs = plan_runs({INITIAL: config} if shared else configs, config.evaluate.seeds, config.evaluate.epochs)
    search_cost = read_search_cost(config.tune.metric)
    store = open_store(config.mlflow)
    stage_inputs = read_inputs(config)
    data_hash = stage_inputs.dataset_hash
    inputs = run_inputs(stage_inputs)
    run_configs = {(spec.name, spec.seed): spec.config for spec in specs}
    execution = describe_execution(config.tune, len(specs))

    source = source_tags()
    commit = source["git_commit"]
    tags = {"stage": "evaluate", **source, "dataset_hash": data_hash}
    inherited = provenance(tags)
    with tracked_run(store, "evaluate", tags) as parent_id:
        log_params(store, parent_id, parent_params(config))

        done: list[RunResult] = []
        runs_started = time.perf_counter()

        def stands_for(result: RunResult) -> list[RunResult]:
            return [result, shared_result(result, TUNED)] if shared else [result]

        def log_result(result: RunResult) -> None:
            for reported in stands_for(result):
                log_run(store, parent_id, run_configs[result.name, result.seed], reported, inherited)
            done.append(result)
            log.info(run_done_line(len(done), len(specs), result, time.perf_counter() - runs_started))

        finished = execute(specs, inputs, config.tune, log_result)
        results = [reported for result in finished for reported in stands_for(result)]
        study = Study(
            configs=_as_trained(specs),
            comparison=compare(results, config.evaluate.seeds),
            results=results,
            search_cost=search_cost,
            images={"train": len(inputs.train), "val": len(inputs.val), "test": len(inputs.test)},
            execution=execution,
            machine={
                **machine_info(config, (result.device for result in results), execution),
                "git commit": commit,
                # Not data.source: the same images fetched another way are the same study.
                "dataset hash": f"{data_hash} (of {paths.DATA_ROOT})",
                "MLflow run": f"{parent_id} (experiment {store.experiment_name})",
            },
            wall_time_s=time.perf_counter() - started,
            categories=tuple(inputs.test.categories.values()),
        )
        kept = kept_model(results, config.evaluate.seeds, study.tuned_is_initial)
        ids = stage_inputs.index.category_ids
        metrics = write_outputs(study, inputs.test, kept, ids)
        write_run_record(paths.STAGE_RUNS["evaluate"], "evaluate", parent_id, store.experiment_name)
        log_outputs(store, parent_id)
        registration = register_kept(store, parent_id, study, kept, ids, data_hash, {**inherited, **source})
    _print_summary(metrics, summary_json(study), kept, registration, store, parent_id)
    return metrics


def _as_trained(specs: Sequence[RunSpec]) -> Mapping[str, StudyConfig]:
    """Each configuration as its runs trained it (evaluate.epochs applied); seeds differ per run.

    Without tuned runs (the search kept the initial configuration) the tuned one is the initial.
    """
    configs = {spec.name: spec.config for spec in specs if spec.keep_model}
    configs.setdefault(TUNED, configs[INITIAL])
    return configs


def run_done_line(done: int, total: int, result: RunResult, elapsed_s: float) -> str:
    """``run 2 of 6 finished (initial, seed 2); ETA 41 min`` (the mean time per finished run so far)."""
    line = f"run {done} of {total} finished ({result.name}, seed {result.seed})"
    if done < total:
        line += f"; ETA {duration(elapsed_s / done * (total - done))} (from the mean time per run so far)"
    return line


def _print_summary(
    metrics: Mapping[str, Any], summary: Mapping[str, Any], kept: KeptModel, registration: Registration,
    store: Store, run_id: str,
) -> None:
    def number(value: float | None, signed: bool = False) -> str:
        return "n/a" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"

    if summary["tuned_is_initial"]:
        lines = ["the sweep's best configuration is the initial one: there is no tuned model to compare"]
        lines += [f"test {metric}: {INITIAL} {number(metrics[INITIAL][metric]['mean'])}" for metric in metrics["delta"]]
    else:
        lines = [
            f"test {metric}: {INITIAL} {number(metrics[INITIAL][metric]['mean'])}, "
            f"{TUNED} {number(metrics[TUNED][metric]['mean'])}, Δ {number(delta['mean'], True)} "
            f"[{number(delta['ci_low'], True)}, {number(delta['ci_high'], True)}]: {summary['delta_verdicts'][metric]}"
            for metric, delta in metrics["delta"].items()
        ]
    if metrics["runs_diverged"]:
        lines.append(f"{metrics['runs_diverged']} run(s) diverged: see {files.REPORT}")
    if metrics["runs_out_of_memory"]:
        lines.append(f"{metrics['runs_out_of_memory']} run(s) ran out of memory, also when trained again alone: "
                     f"see {files.REPORT}")
    lines.append(f"kept {paths.TUNED_MODEL}: {kept.note}")
    alias = "now the champion" if registration.champion else "champion unchanged"
    lines.append(f"registered {registration.uri} ({alias}: {registration.reason})")
    console.summary(log, "\n".join(lines),
                    wrote=[paths.TUNED_MODEL, files.REPORT, paths.EVALUATE_DIR, paths.EVALUATE_METRICS,
                           files.PER_SEED_CSV],
                    look=console.views(store.tracking_uri, run_id))
