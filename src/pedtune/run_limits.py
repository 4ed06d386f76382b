"""Keep a trial or an evaluate run to what Ray reserved for it (device, GPU memory), on the params' CPU threads.

Ray books ``tune.resources_per_trial`` but enforces none of it inside the process. Since Ray
2.60 a task granted no GPU still sees every device (``CUDA_VISIBLE_DEVICES`` is left alone
unless ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1``), so ``train.device: auto`` would take
``cuda:0`` beside the runs that reserved it; a share of a GPU caps nothing, so one of two
trials at ``gpu: 0.5`` can take the memory the other needs; and a reused actor or worker still
holds the cached GPU blocks of the run before. :func:`place_run` closes each of these gaps
before ``fit`` starts.

The CPU threads come from params (:func:`use_threads`), not from the CPUs Ray granted: on the
CPU the thread count changes the figures, so a run that happened to get more cores (the last
evaluate run, a train stage on a bigger machine) would not reproduce the trial it repeats.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from pedtune.config import ConfigError, StudyConfig
from pedtune.device import resolve_device
from pedtune.engine.memory import release_freed_heap


@dataclass(frozen=True)
class Grant:
    """The resources a run may use."""

    gpu: float  # GPUs reserved: 0, a fraction of one, or 1


def ray_grant() -> Grant | None:
    """What Ray reserved for the calling task or trial; None outside a Ray worker."""
    ray = sys.modules.get("ray")  # never imported here: a process without Ray has no grant
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver: nothing was reserved for it
        return None
    assigned = context.get_assigned_resources()  # a trial's placement-group bundle under its plain names
    return Grant(gpu=assigned.get("GPU", 0.0))


def use_threads(config: StudyConfig) -> int:
    """Size torch's thread pool to ``config.torch_threads`` (``train.threads``); returns the count."""
    threads = config.torch_threads
    torch.set_num_threads(threads)
    return threads


def place_run(config: StudyConfig, grant: Grant) -> StudyConfig:
    """``config`` as the run trains it under ``grant``, with this process prepared for it.

    Frees what an earlier run in this process left (heap and cached GPU blocks); with no GPU
    granted, ``train.device: auto`` becomes ``cpu``; on a GPU, caps this process's share of the
    device's memory at the granted fraction (1 lifts the cap an earlier run set); sizes torch's
    thread pool to ``train.threads`` (:func:`use_threads`).
    """
    release_freed_heap()
    if grant.gpu == 0:
        if config.train.device == "cuda":
            raise ConfigError("train.device is 'cuda' but this run was granted no GPU (tune.resources_per_trial.gpu)")
        if config.train.device == "auto":
            config = config.model_copy(update={"train": config.train.model_copy(update={"device": "cpu"})})
    device = resolve_device(config.train.device)
    if device.type == "cuda":
        # Allocations beyond it raise torch.OutOfMemoryError in this run instead of starving its neighbours.
        torch.cuda.set_per_process_memory_fraction(float(min(grant.gpu, 1.0)))
    use_threads(config)
    return config
