"""Run the independent (config, seed) trainings one by one, or side by side through Ray.

Ray only pays off when two runs fit at once: its start-up costs seconds and its workers
hold a second copy of the data, so a machine with room for one run uses a plain loop.

Side by side, each run trains on the GPU share Ray reserved for it and on ``train.threads``
torch threads, like every trial: a run that finds slots idle (the last of an odd round) does
not take them, since a different thread count would change its figures. A run that ran out
of memory is trained once more, alone, after the others (with a whole GPU where it had a
share); if that fails too, it is reported without a test score, like a run whose loss diverged.
"""

from __future__ import annotations

import contextlib

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from pedtune import console
from pedtune.config.schema import ResourcesConfig, TuneConfig
from pedtune.evaluate.runs import RunInputs, RunResult, RunSpec, train_and_test, unfinished_result
from pedtune.run_limits import Grant, ray_grant

log = console.get(__name__)

ResultHook = Callable[[RunResult], None]


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))  # honours taskset / container CPU limits
    return os.cpu_count() or 1


def local_capacity(resources: ResourcesConfig) -> int:
    """How many runs needing ``resources`` fit on this machine at once (0 if not even one)."""
    capacity = math.floor(available_cpus() / resources.cpu)
    if resources.gpu > 0:
        capacity = min(capacity, math.floor(torch.cuda.device_count() / resources.gpu))
    return capacity


def uses_ray(tune: TuneConfig, num_runs: int) -> bool:
    """A Ray cluster, when one is named, always; locally only if two runs fit at once."""
    return bool(tune.ray_address) or min(local_capacity(tune.resources_per_trial), num_runs) > 1


def describe_execution(tune: TuneConfig, num_runs: int) -> str:
    resources = tune.resources_per_trial
    per_run = f"{resources.cpu:g} CPU + {resources.gpu:g} GPU per run"
    if tune.ray_address:
        return f"Ray cluster at {tune.ray_address}, {per_run}"
    if uses_ray(tune, num_runs):
        return f"local Ray, up to {min(local_capacity(resources), num_runs)} runs at once, {per_run}"
    return "one run at a time (no room for two runs of tune.resources_per_trial)"


def alone(resources: ResourcesConfig) -> Grant:
    """What a run has when it trains by itself: if it asks for a GPU, a whole one."""
    return Grant(gpu=1.0 if resources.gpu > 0 else 0.0)


def execute(specs: Sequence[RunSpec], inputs: RunInputs, tune: TuneConfig, on_result: ResultHook) -> list[RunResult]:
    """Every spec's :class:`RunResult`, in completion order; ``on_result`` sees each as it arrives."""
    log.info(f"{len(specs)} runs: {describe_execution(tune, len(specs))}")
    if not uses_ray(tune, len(specs)):
        grant = alone(tune.resources_per_trial)

        def run(spec: RunSpec) -> RunResult:
            return train_and_test(spec, inputs, grant)

        return _retried_alone(specs, (run(spec) for spec in specs), run, on_result)
    return _execute_on_ray(specs, inputs, tune, on_result)


def _retried_alone(
    specs: Sequence[RunSpec], first: Iterable[RunResult], run_alone: Callable[[RunSpec], RunResult],
    on_result: ResultHook,
) -> list[RunResult]:
    """``first``'s results, each run that ran out of memory replaced by one more try, alone, once the rest are done."""
    by_key = {(spec.name, spec.seed): spec for spec in specs}
    results, retry = [], []
    for result in first:
        if result.out_of_memory is None:
            on_result(result)
            results.append(result)
        else:
            log.warning(f"{result.name} seed {result.seed}: will be trained again, alone, after the other runs")
            retry.append(by_key[result.name, result.seed])
    for spec in retry:
        result = run_alone(spec)
        on_result(result)
        results.append(result)
    return results


def _execute_on_ray(
    specs: Sequence[RunSpec], inputs: RunInputs, tune: TuneConfig, on_result: ResultHook
) -> list[RunResult]:
    import ray  # only this path needs it; importing Ray costs seconds

    from pedtune.ray_cluster import check_capacity, ray_session

    # The runs' progress lines reach this console through Ray, unless --quiet.
    with ray_session(tune.ray_address, log_to_driver=not console.quiet()):
        check_capacity(tune.resources_per_trial, "run", tune.ray_address)
        resources = tune.resources_per_trial
        # No retries by Ray: a run that fails (a crash, not a divergence, which is a result) would fail again.
        task = ray.remote(max_retries=0)(_ray_run)
        shared = ray.put(inputs)  # stores and weights cross to the workers once, not per run

        def submitted(spec: RunSpec) -> Any:
            return task.options(num_cpus=resources.cpu, num_gpus=resources.gpu).remote(spec, shared)

        def outcome(ref: Any, spec: RunSpec) -> RunResult:
            try:
                return ray.get(ref)
            except ray.exceptions.OutOfMemoryError as error:  # Ray's memory monitor killed the worker
                message = str(error).strip().splitlines()[0]
                log.warning(f"{spec.name} seed {spec.seed}: out of memory ({message})")
                return unfinished_result(spec, [], 0.0, "unknown (the worker was killed)", out_of_memory=message)

        def as_they_finish() -> Iterator[RunResult]:
            pending = {submitted(spec): spec for spec in specs}
            try:
                while pending:
                    (done,), _ = ray.wait(list(pending), num_returns=1)
                    yield outcome(done, pending.pop(done))
            finally:  # after a failure: in a Ray the caller keeps running, nothing else would stop them
                for ref in pending:
                    ray.cancel(ref, force=True)

        def run_alone(spec: RunSpec) -> RunResult:
            # A whole GPU where the run had a share: its memory cap goes with it.
            ref = task.options(num_cpus=resources.cpu, num_gpus=math.ceil(resources.gpu)).remote(spec, shared)
            return outcome(ref, spec)

        with contextlib.closing(as_they_finish()) as first:
            return _retried_alone(specs, first, run_alone, on_result)


def _ray_run(spec: RunSpec, inputs: RunInputs) -> RunResult:
    """The Ray task: one run, within what Ray granted it."""
    grant = ray_grant()
    assert grant is not None  # a Ray task always has one
    return train_and_test(spec, inputs, grant)
