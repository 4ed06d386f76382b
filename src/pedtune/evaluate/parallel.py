"""Run the independent (config, seed) trainings one by one, or side by side through Ray.

Ray only pays off when two runs fit at once: its start-up costs seconds and its workers
hold a second copy of the data, so a machine with room for one run uses a plain loop.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch

from pedtune import console
from pedtune.config.schema import ResourcesConfig, TuneConfig
from pedtune.evaluate.runs import RunInputs, RunResult, RunSpec, train_and_test

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


def execute(specs: Sequence[RunSpec], inputs: RunInputs, tune: TuneConfig, on_result: ResultHook) -> list[RunResult]:
    """Every spec's :class:`RunResult`, in completion order; ``on_result`` sees each as it arrives."""
    log.info(f"{len(specs)} runs: {describe_execution(tune, len(specs))}")
    if not uses_ray(tune, len(specs)):
        return [_handled(train_and_test(spec, inputs), on_result) for spec in specs]
    return _execute_on_ray(specs, inputs, tune, on_result)


def _handled(result: RunResult, on_result: ResultHook) -> RunResult:
    on_result(result)
    return result


def _execute_on_ray(
    specs: Sequence[RunSpec], inputs: RunInputs, tune: TuneConfig, on_result: ResultHook
) -> list[RunResult]:
    import ray  # only this path needs it; importing Ray costs seconds

    from pedtune.cluster import check_capacity, ray_session

    # The runs' progress lines reach this console through Ray, unless --quiet.
    with ray_session(tune.ray_address, log_to_driver=not console.quiet()):
        check_capacity(tune.resources_per_trial, "run", tune.ray_address)
        resources = tune.resources_per_trial
        # No retries: a run that fails (a crash, not a divergence, which is a result) would fail again.
        task = ray.remote(num_cpus=resources.cpu, num_gpus=resources.gpu, max_retries=0)(train_and_test)
        shared = ray.put(inputs)  # stores and weights cross to the workers once, not per run
        pending = [task.remote(spec, shared) for spec in specs]
        results = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.append(_handled(ray.get(done[0]), on_result))
        return results  # leaving the session also cancels runs still pending after a failure
