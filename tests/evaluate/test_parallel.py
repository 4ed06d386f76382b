"""Choosing between the plain loop and Ray, and the Ray path itself on a tiny dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pedtune.config import StudyConfig, validate
from pedtune.config.schema import ResourcesConfig, TuneConfig
from pedtune.data.dataset import SampleSet, list_stems
from pedtune.evaluate import parallel
from pedtune.evaluate.runs import INITIAL, TUNED, RunInputs, RunResult, RunSpec, out_of_memory, plan_runs

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("cpus", "gpus", "resources", "expected"),
    [
        (2, 0, ResourcesConfig(cpu=1, gpu=0), 2),
        (2, 0, ResourcesConfig(cpu=4, gpu=0), 0),
        (16, 0, ResourcesConfig(cpu=4, gpu=1), 0),  # a GPU per run, none here
        (16, 1, ResourcesConfig(cpu=4, gpu=0.5), 2),  # the GPU, not the CPUs, limits
        (16, 2, ResourcesConfig(cpu=6, gpu=0.5), 2),  # the CPUs limit
    ],
)
def test_local_capacity(monkeypatch, cpus, gpus, resources, expected):
    monkeypatch.setattr(parallel, "available_cpus", lambda: cpus)
    monkeypatch.setattr(parallel.torch.cuda, "device_count", lambda: gpus)
    assert parallel.local_capacity(resources) == expected


def test_ray_only_when_two_runs_fit_or_a_cluster_is_named(monkeypatch):
    monkeypatch.setattr(parallel, "local_capacity", lambda resources: 2)
    assert parallel.uses_ray(TuneConfig(), num_runs=4)
    assert not parallel.uses_ray(TuneConfig(), num_runs=1)
    monkeypatch.setattr(parallel, "local_capacity", lambda resources: 1)
    assert not parallel.uses_ray(TuneConfig(), num_runs=4)
    assert parallel.uses_ray(TuneConfig(ray_address="head:6379", storage_path="s3://bucket/sweeps"), num_runs=4)


@pytest.fixture
def tiny_config() -> StudyConfig:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["model"].update(
        arch="maskrcnn_mobilenet_v3_large_fpn", weights="none", min_size=48, max_size=64, detections_per_img=10,
        box_batch_size_per_image=64
    )
    raw["train"].update(epochs=1, warmup_epochs=0.5, device="cpu")
    raw["data"].update(num_workers=0)
    raw["tune"]["asha"].update(grace_period=1)
    raw["tune"]["resources_per_trial"].update(cpu=1, gpu=0)
    return validate(raw)


@pytest.mark.slow  # starts a local Ray instance
def test_runs_in_parallel_through_ray(synthetic_root: Path, tiny_config: StudyConfig, monkeypatch):
    import ray

    monkeypatch.setattr(parallel, "local_capacity", lambda resources: 2)
    stems = list_stems(synthetic_root)

    def store(part: list[str]) -> SampleSet:
        return SampleSet(synthetic_root, part, 48, 64).preload()

    inputs = RunInputs(train=store(stems[:4]), val=store(stems[4:5]), test=store(stems[5:]), pretrained={})
    # Three runs on two slots: the last one trains on one slot's threads, like the others.
    specs = plan_runs({INITIAL: tiny_config, TUNED: tiny_config}, seeds=[3, 4], epochs=None)[:3]
    seen = []

    results = parallel.execute(specs, inputs, tiny_config.tune, seen.append)

    assert not ray.is_initialized()  # shut down once every run is back
    assert seen == results
    assert sorted((r.name, r.seed) for r in results) == [(INITIAL, 3), (INITIAL, 4), (TUNED, 3)]
    for result in results:
        assert len(result.history) == 1 and set(result.test) >= {"bbox_mAP", "segm_mAP"}
        assert result.device == "cpu" and bool(result.state_dict) == (result.seed == 3)  # the first seed's weights


def _spec(name: str, seed: int) -> RunSpec:
    return RunSpec(name, seed, config=None, keep_model=False)  # type: ignore[arg-type]  # never trained here


def _result(spec: RunSpec, **why: str) -> RunResult:
    return RunResult(spec.name, spec.seed, [], {} if why else {"bbox_mAP": 0.5}, 1.0, "cpu", None, **why)


def test_a_run_out_of_memory_is_retried_alone_after_the_others_and_kept_when_it_then_fits():
    specs = [_spec(INITIAL, 1), _spec(TUNED, 1), _spec(INITIAL, 2)]
    first = [_result(specs[0]), _result(specs[1], out_of_memory="CUDA out of memory."), _result(specs[2])]
    retried, seen = [], []

    def run_alone(spec: RunSpec) -> RunResult:
        retried.append((spec.name, spec.seed, len(seen)))  # how many results had arrived by then
        return _result(spec)

    results = parallel._retried_alone(specs, iter(first), run_alone, seen.append)

    assert retried == [(TUNED, 1, 2)]  # once, after both other runs
    assert seen == results and [(r.name, r.seed, r.failure) for r in results] == [
        (INITIAL, 1, None), (INITIAL, 2, None), (TUNED, 1, None)]


def test_only_allocation_failures_count_as_out_of_memory():
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB."))
    try:
        torch.empty(2**62, dtype=torch.uint8)
    except RuntimeError as error:
        assert out_of_memory(error)
    assert out_of_memory(MemoryError())
    assert not out_of_memory(RuntimeError("shape '[2, 3]' is invalid for input of size 5"))
    assert not out_of_memory(ValueError("can't allocate memory"))  # not the allocator's error type
