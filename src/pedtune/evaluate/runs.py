"""One evaluation run: train a configuration with one seed, then score it once on the test split.

:func:`train_and_test` is the unit of work both for the plain loop and for a Ray task, so
it takes everything it needs as arguments and returns plain, picklable data; the driver
does all the MLflow logging.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, Dataset

from pedtune import console
from pedtune.config import StudyConfig
from pedtune.data.dataset import DetectionDataset, SampleSet, collate
from pedtune.device import describe_device, resolve_device
from pedtune.engine.coco_eval import ground_truth
from pedtune.engine.train import evaluate, fit
from pedtune.errors import NonFiniteLossError
from pedtune.evaluate.configs import run_config
from pedtune.run_limits import Grant, place_run
from pedtune.units import duration

log = console.get(__name__)
INITIAL, TUNED = "initial", "tuned"


@dataclass(frozen=True)
class RunInputs:
    """The data every run shares; put into Ray's object store once."""

    train: SampleSet  # the evaluate.train_on part
    val: SampleSet  # scored after every epoch by fit; nothing is selected on it here
    test: SampleSet  # scored once, after the last epoch
    pretrained: Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class RunSpec:
    name: str  # INITIAL | TUNED
    seed: int
    config: StudyConfig  # train.seed (and evaluate.epochs) already applied
    keep_model: bool  # return the trained weights (the first seed's, for the pictures)


@dataclass(frozen=True)
class RunResult:
    name: str
    seed: int
    history: list[dict[str, float]]  # fit's per-epoch metrics (val scores)
    test: dict[str, float]  # COCO AP of the final model on the test split; empty if it diverged
    wall_time_s: float  # training and the test scoring
    device: str
    state_dict: dict[str, torch.Tensor] | None  # on the CPU; only when the spec asked for it
    trained_as: str | None = None  # another config's name when this result is that config's run
    diverged: str | None = None  # the NonFiniteLossError's message when training diverged
    out_of_memory: str | None = None  # the allocator's message when the run ran out of memory

    @property
    def failure(self) -> str | None:
        """Why the run has no test score (None when it has one)."""
        if self.diverged is not None:
            return f"diverged: {self.diverged}"
        if self.out_of_memory is not None:
            return f"out of memory: {self.out_of_memory}"
        return None


def shared_result(result: RunResult, name: str) -> RunResult:
    """``result`` standing for configuration ``name`` too, whose run would be the very same training."""
    return replace(result, name=name, trained_as=result.name)


def plan_runs(configs: Mapping[str, StudyConfig], seeds: Sequence[int], epochs: int | None) -> list[RunSpec]:
    """Every (config, seed) pair, seed-major so that finished pairs come early; validates each."""
    return [
        RunSpec(name, seed, run_config(config, seed, epochs), keep_model=seed == seeds[0])
        for seed in seeds
        for name, config in configs.items()
    ]


def inference_loader(dataset: Dataset, config: StudyConfig) -> DataLoader:
    return DataLoader(
        dataset, batch_size=config.train.eval_batch_size, num_workers=config.data.num_workers, collate_fn=collate
    )


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: CUDA's allocator (past the run's share of the
    GPU too), torch's CPU allocator, or Python's."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    # c10's DefaultCPUAllocator: "can't allocate memory" (POSIX), "not enough memory" (Windows).
    return isinstance(error, RuntimeError) and any(
        text in str(error) for text in ("can't allocate memory", "not enough memory")
    )


def unfinished_result(spec: RunSpec, history: list[dict[str, float]], wall_time_s: float, device: str,
                      **why: str) -> RunResult:
    """The result of a run that has no test score; ``why``: ``diverged=`` or ``out_of_memory=``."""
    return RunResult(name=spec.name, seed=spec.seed, history=history, test={}, wall_time_s=wall_time_s,
                     device=device, state_dict=None, **why)


def train_and_test(spec: RunSpec, inputs: RunInputs, grant: Grant) -> RunResult:
    """The run's result, trained within ``grant`` (:func:`pedtune.run_limits.place_run`).

    A run whose loss diverges or that runs out of memory is a result too (``diverged``,
    ``out_of_memory``), not an error, so that the other runs' hours of training still reach the
    report (the caller may retry one that ran out of memory).
    """
    started = time.perf_counter()
    config = place_run(spec.config, grant)
    epochs: list[dict[str, float]] = []
    log.info(f"{spec.name} seed {spec.seed}: training {spec.config.train.epochs} epochs")
    try:
        result = fit(config, inputs.train, inputs.val, inputs.pretrained,
                     on_epoch_end=lambda epoch, state: epochs.append(dict(epoch.metrics)))
        device = next(result.model.parameters()).device
        loader = inference_loader(DetectionDataset(inputs.test), config)
        test = evaluate(result.model, loader, ground_truth(inputs.test, config.train.coco_backend), device,
                        f"{spec.name} seed {spec.seed} test", per_category=True)
    except NonFiniteLossError as error:
        log.warning(f"{spec.name} seed {spec.seed}: diverged ({error})")
        return unfinished_result(spec, epochs, time.perf_counter() - started,
                                 describe_device(resolve_device(config.train.device)), diverged=str(error))
    except (RuntimeError, MemoryError) as error:
        if not out_of_memory(error):
            raise
        message = (str(error).strip() or type(error).__name__).splitlines()[0]
        log.warning(f"{spec.name} seed {spec.seed}: out of memory ({message})")
        return unfinished_result(spec, epochs, time.perf_counter() - started,
                                 describe_device(resolve_device(config.train.device)), out_of_memory=message)
    log.info(f"{spec.name} seed {spec.seed}: test bbox_mAP {test['bbox_mAP']:.4f}, segm_mAP {test['segm_mAP']:.4f} "
             f"({duration(time.perf_counter() - started)})")
    state_dict = None
    if spec.keep_model:
        state_dict = {key: value.detach().cpu() for key, value in result.model.state_dict().items()}
    return RunResult(
        name=spec.name,
        seed=spec.seed,
        history=result.history,
        test=test,
        wall_time_s=time.perf_counter() - started,
        device=describe_device(device),
        state_dict=state_dict,
    )
