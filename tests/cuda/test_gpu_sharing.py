"""GPU sharing on a real GPU (skipped without CUDA): the memory cap of a GPU share, ``gpu: 0`` on
a GPU node, the cache a reused process frees, and an evaluate run out of memory retried alone.

tests/unit/test_run_limits.py checks the same logic with CUDA mocked.
"""

from __future__ import annotations

import pytest
import torch

from pedtune.config import StudyConfig
from pedtune.data.dataset import SampleSet
from pedtune.engine import train as engine
from pedtune.evaluate import parallel
from pedtune.evaluate.runs import INITIAL, RunInputs, RunResult, RunSpec, train_and_test
from pedtune.run_limits import Grant, place_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def auto_config(tiny_config: StudyConfig) -> StudyConfig:
    return tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"device": "auto"})})


@pytest.fixture(autouse=True)
def _whole_gpu_after():
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def _bytes(fraction: float) -> int:
    return int(torch.cuda.get_device_properties(0).total_memory * fraction)


def test_a_share_caps_the_memory_and_a_whole_gpu_lifts_the_cap(auto_config):
    place_run(auto_config, Grant(gpu=0.25))
    with pytest.raises(torch.OutOfMemoryError):
        torch.empty(_bytes(0.3), dtype=torch.uint8, device="cuda")
    within = torch.empty(_bytes(0.1), dtype=torch.uint8, device="cuda")
    del within
    place_run(auto_config, Grant(gpu=1.0))  # the next run in this process had a whole GPU
    beyond_the_old_cap = torch.empty(_bytes(0.3), dtype=torch.uint8, device="cuda")
    del beyond_the_old_cap


def test_no_gpu_granted_trains_on_the_cpu_on_a_gpu_node(auto_config, synthetic_store):
    placed = place_run(auto_config, Grant(gpu=0.0))
    fitted = engine.fit(placed, synthetic_store, synthetic_store)
    assert next(fitted.model.parameters()).device.type == "cpu"


def test_the_next_run_in_a_process_starts_without_the_previous_runs_cached_blocks(auto_config, synthetic_store):
    fitted = engine.fit(place_run(auto_config, Grant(gpu=0.5)), synthetic_store, synthetic_store)
    assert next(fitted.model.parameters()).is_cuda
    del fitted
    cached = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    assert cached > 0  # the allocator keeps the freed blocks
    place_run(auto_config, Grant(gpu=0.5))
    # What remains reserved holds live tensors (partly used 2 MB segments at most), not the last run's blocks.
    assert torch.cuda.memory_reserved() - torch.cuda.memory_allocated() < min(cached, 20 * 2**20)


def test_an_evaluate_run_out_of_its_share_is_reported_then_fits_alone(auto_config, synthetic_store: SampleSet):
    spec = RunSpec(INITIAL, 1, auto_config, keep_model=False)
    inputs = RunInputs(train=synthetic_store, val=synthetic_store, test=synthetic_store, pretrained={})
    starved = Grant(gpu=1e-4)  # a few MB of the device: the model alone does not fit
    first = train_and_test(spec, inputs, starved)
    assert first.out_of_memory is not None and first.test == {} and first.failure.startswith("out of memory")
    seen: list[RunResult] = []
    (retried,) = parallel._retried_alone([spec], [first], lambda s: train_and_test(s, inputs, Grant(gpu=1.0)),
                                         seen.append)
    assert retried.failure is None and retried.device.startswith("cuda") and seen == [retried]
