"""A run keeps to what Ray granted it (device, GPU memory share) on the params' threads; with CUDA mocked (no GPU here).

tests/cuda/test_gpu_sharing.py checks the same on a real GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from pedtune.config import ConfigError, StudyConfig, validate
from pedtune.config.schema import ResourcesConfig
from pedtune.data.dataset import SampleSet
from pedtune.engine import memory
from pedtune.engine.train import fit
from pedtune.run_limits import Grant, place_run, ray_grant
from pedtune.tune import trainable


class FakeCuda:
    """A node with a GPU, as far as the code asks torch.cuda: records the calls that change it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fractions: list[float] = []
        self.emptied = 0
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda fraction, device=None:
                            self.fractions.append(fraction))
        monkeypatch.setattr(torch.cuda, "empty_cache", self._empty_cache)

    def _empty_cache(self) -> None:
        self.emptied += 1


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    return FakeCuda(monkeypatch)


@pytest.fixture
def auto_config(tiny_config: StudyConfig) -> StudyConfig:
    return tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"device": "auto"})})


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("share", [0.5, 0.25])
def test_a_gpu_share_caps_the_process_memory_at_that_fraction(cuda, auto_config, share):
    placed = place_run(auto_config, Grant(gpu=share))
    assert placed.train.device == "auto" and cuda.fractions == [share]


def test_a_whole_gpu_lifts_the_cap_an_earlier_run_in_the_process_set(cuda, auto_config):
    place_run(auto_config, Grant(gpu=0.5))
    place_run(auto_config, Grant(gpu=1.0))
    assert cuda.fractions == [0.5, 1.0]


def test_no_gpu_granted_trains_on_the_cpu_on_a_gpu_node(cuda, auto_config):
    placed = place_run(auto_config, Grant(gpu=0.0))
    assert placed.train.device == "cpu" and cuda.fractions == []
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(("threads", "cpu", "expected"), [(None, 4, 4), (None, 1.5, 1), (None, 0.5, 1), (3, 1, 3)])
def test_a_run_trains_on_the_params_threads_whatever_cores_it_finds(raw_params, threads, cpu, expected):
    raw_params["train"]["threads"] = threads
    raw_params["tune"]["resources_per_trial"].update(cpu=cpu, gpu=0)
    config = validate(raw_params)
    torch.set_num_threads(2)  # what an earlier run in the process, or the process's cores, left
    place_run(config, Grant(gpu=0.0))
    assert config.torch_threads == expected and torch.get_num_threads() == expected


def test_the_same_params_train_the_same_losses_after_a_run_on_other_threads(tiny_config, synthetic_store: SampleSet):
    config = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"epochs": 1})})
    runs = []
    for threads_before in (1, 2):  # the second run is placed in a process an earlier run left at 2 threads
        torch.set_num_threads(threads_before)
        history = fit(place_run(config, Grant(gpu=0.0)), synthetic_store, synthetic_store).history
        runs.append([{k: v for k, v in epoch.items() if not k.endswith("_time_s")} for epoch in history])
    assert runs[0] == runs[1] and runs[0][0]["train_loss"] > 0  # to the last digit


def test_cuda_without_a_granted_gpu_is_refused(cuda, auto_config):
    cuda_config = auto_config.model_copy(update={"train": auto_config.train.model_copy(update={"device": "cuda"})})
    with pytest.raises(ConfigError, match="granted no GPU"):
        place_run(cuda_config, Grant(gpu=0.0))


def test_a_run_frees_what_the_run_before_it_in_the_process_cached(cuda, auto_config):
    place_run(auto_config, Grant(gpu=0.5))
    assert cuda.emptied == 1
    assert memory.release_freed_heap() in (True, False) and cuda.emptied == 2  # fit's own release does too


def test_outside_ray_there_is_no_grant():
    assert ray_grant() is None


def test_a_reused_trial_actor_frees_the_previous_trials_gpu_memory_and_trains_where_granted(
    cuda, auto_config, monkeypatch, tmp_path: Path
):
    trained: list[tuple[str, int, int]] = []

    def fake_fit(config, train_samples, eval_samples, pretrained=None, on_epoch_end=None, resume=None,
                 on_epoch_trained=None):
        trained.append((config.train.device, cuda.emptied, torch.get_num_threads()))

    monkeypatch.setattr(trainable, "restored_state", lambda: None)
    base = auto_config
    torch.set_num_threads(2)  # the actor's cores, more than train.threads
    sample = {dist.param: getattr(base.train, dist.train_key) for dist in base.tune.search_space}
    for grant in (Grant(gpu=0.5), Grant(gpu=0.0)):  # two trials, one actor
        monkeypatch.setattr(trainable, "ray_grant", lambda grant=grant: grant)
        trainable.train_trial(sample, base=base, train_samples=None, val_samples=None, pretrained={},
                              fit_fn=fake_fit, checkpoint_staging=tmp_path)
    # Each trial emptied the cache before it trained: the second one what the first had left; each on train.threads.
    assert trained == [("auto", 1, 1), ("cpu", 2, 1)] and cuda.fractions == [0.5]


def test_more_than_one_gpu_per_run_is_refused_at_validation(raw_params):
    with pytest.raises(ValidationError, match="trains on one device"):
        ResourcesConfig(gpu=2)
    raw_params["tune"]["resources_per_trial"]["gpu"] = 1.5
    with pytest.raises(ConfigError, match=r"tune\.resources_per_trial\.gpu.*gpu is 1\.5, but a trial or evaluate run"):
        validate(raw_params)
    assert ResourcesConfig(gpu=0.25).gpu == 0.25 and ResourcesConfig(gpu=1).gpu == 1


def test_cuda_with_no_gpu_per_run_is_refused_at_validation(raw_params):
    raw_params["train"]["device"] = "cuda"
    raw_params["tune"]["resources_per_trial"]["gpu"] = 0
    with pytest.raises(ConfigError, match="train.device is 'cuda' but tune.resources_per_trial.gpu is 0"):
        validate(raw_params)


def _trial_reports_its_grant(config: dict) -> None:
    from ray import tune

    tune.report({"gpu": ray_grant().gpu})


def _threads_of_a_placed_run(config: StudyConfig) -> int:
    place_run(config, ray_grant())
    return torch.get_num_threads()


@pytest.mark.slow  # starts a local Ray instance
def test_ray_grants_reach_tasks_and_trials(tmp_path: Path, tiny_config: StudyConfig):
    """Ray's own API on a node with a stand-in GPU (Ray books it; nothing here uses CUDA)."""
    import sys

    import ray
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(ray_grant)
        assert ray.get(task.options(num_cpus=1, num_gpus=0.5).remote()) == Grant(gpu=0.5)
        assert ray.get(task.options(num_cpus=1, num_gpus=0).remote()) == Grant(gpu=0.0)
        assert ray_grant() is None  # the driver was granted nothing
        # A run granted both CPUs (as evaluate's last run once was) still trains on train.threads.
        placed = ray.remote(_threads_of_a_placed_run).options(num_cpus=2, num_gpus=0).remote(tiny_config)
        assert ray.get(placed) == tiny_config.train.threads == 1
        trial = tune.with_resources(_trial_reports_its_grant, {"cpu": 1, "gpu": 0.25})
        grid = tune.Tuner(trial, tune_config=tune.TuneConfig(num_samples=1),
                          run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
        assert grid[0].metrics["gpu"] == 0.25
    finally:
        ray.shutdown()
