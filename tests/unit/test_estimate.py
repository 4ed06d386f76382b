"""The run-time estimate and the CPU guard: GPU-sized params stop check/train/tune on a machine
without CUDA within seconds, naming the estimated time and the CPU path; train.device: cpu runs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from pedtune import console
from pedtune.cli import main
from pedtune.config import validate
from pedtune.engine import estimate as estimate_module
from pedtune.engine.estimate import (
    HONEST_WITHIN,
    StepTimes,
    Workload,
    estimate,
    gpu_sized,
    measure,
    probe_model,
    sweep_trial_epochs,
    workload,
)

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # \r, ANSI escapes
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _set(raw: dict, dotted: str, value) -> dict:
    section, key = dotted.split(".", 1)
    node = raw[section]
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return raw


def test_the_sweep_budget_is_successive_halving_for_asha_and_everything_for_fifo(raw_params):
    config = validate(raw_params)  # 20 trials x 10 epochs, grace 2, factor 3: rungs 2 and 6, then 10
    assert sweep_trial_epochs(config) == pytest.approx(20 * 2 + 20 / 3 * 4 + 20 / 9 * 4)
    fifo = validate(_set(raw_params, "tune.scheduler", "fifo"))
    assert sweep_trial_epochs(fifo) == 200


def test_the_pixel_share_scales_with_pixels_and_the_heads_with_regions(raw_params):
    config = validate(raw_params)
    times = StepTimes("cpu", 100, 100, train_s=3.0, eval_s=1.0, train_pixels_s=2.0, eval_pixels_s=0.5)
    assert times.scaled(200, 200) == (1.0 + 2.0 * 4, 0.5 + 0.5 * 4)
    probed = StepTimes("cpu", 100, 100, 3.0, 1.0, 2.0, 0.5, train_regions=8, eval_regions=10)
    assert probed.scaled(100, 100) == (1.0 * 8 + 2.0, 0.5 * 10 + 0.5)
    work = Workload({"train": 10, "val": 2, "test": 3}, 200, 200, "test")
    found = estimate(config, times, work)
    assert found.epoch_s == pytest.approx(10 * 9.0 + 2 * 2.5)
    assert found.train_s == pytest.approx(10 * found.epoch_s)
    assert found.tune_s == pytest.approx(sweep_trial_epochs(config) * found.epoch_s)
    # 3 seeds x 2 configurations, 10 epochs each, then the test split once per run
    assert found.evaluate_s == pytest.approx(6 * (10 * (10 * 9.0 + 2 * 2.5) + 3 * 2.5))


def test_the_workload_reads_the_split_and_image_sizes_when_fetched(tiny_config, synthetic_root, tmp_path):
    from pedtune.data.dataset import list_stems
    from pedtune.data.split import make_split, write_split

    split_file = tmp_path / "split.json"
    write_split(make_split(list_stems(synthetic_root), tiny_config.data.split), split_file, tiny_config.data.split,
                "hash")
    work = workload(tiny_config, split_file, synthetic_root)
    assert sum(work.images.values()) == 6 and str(split_file) in work.basis
    assert (round(work.height), round(work.width)) == (48, 64)  # 48x64 images at min_size 48, max_size 64
    unfetched = workload(tiny_config, tmp_path / "none.json", tmp_path / "none")
    assert sum(unfetched.images.values()) == tiny_config.data.expected_images


def test_a_measured_step_takes_time_and_its_backbone_part_less(tiny_config):
    times = measure(tiny_config.model, torch.device("cpu"))
    assert (times.height, times.width) == (48, 64)
    assert 0 < times.train_pixels_s and 0 < times.train_s and 0 < times.eval_s


def test_the_probe_has_an_eighth_of_the_regions_and_says_how_many_more_the_heads_see(raw_params):
    model = validate(raw_params).model  # 512 sampled regions, 1000 proposals, 100 detections
    small, train, inference = probe_model(model, 128, 171)
    assert (small.box_batch_size_per_image, small.rpn_test_proposals, small.detections_per_img) == (64, 125, 12)
    assert (small.min_size, small.max_size, small.weights) == (128, 171, "none")
    assert (train, inference) == (8, 100 / 12)


def test_the_probe_estimate_is_within_its_stated_factor_of_a_step_timed_at_full_size(raw_params, monkeypatch):
    # A small configuration whose full-size step is cheap to time: the light model at 192-256 px
    # with params.yaml's region counts. Timed in the process's CPU seconds and the best of two of
    # each, so that other work on a busy machine does not decide the comparison.
    monkeypatch.setattr(estimate_module, "time", SimpleNamespace(perf_counter=time.process_time))
    raw_params["model"].update(arch="maskrcnn_mobilenet_v3_large_fpn", weights="none", min_size=192, max_size=256)
    model = validate(raw_params).model
    probed = [measure(model, torch.device("cpu")).scaled(192, 256) for _ in range(2)]
    monkeypatch.setattr(estimate_module, "PROBE_SHORT_SIDE", 192)
    monkeypatch.setattr(estimate_module, "PROBE_ROI_DIVISOR", 1)
    full = [measure(model, torch.device("cpu")) for _ in range(2)]
    assert full[0].height == 192 and full[0].train_regions == 1
    for guess, timed in ((min(p[0] for p in probed), min(t.train_s for t in full)),
                         (min(p[1] for p in probed), min(t.eval_s for t in full))):
        assert timed / HONEST_WITHIN <= guess <= timed * HONEST_WITHIN, (guess, timed)


def test_what_counts_as_gpu_sized(raw_params):
    default = validate(raw_params)
    assert len(gpu_sized(default, "train")) == 1 and len(gpu_sized(default, "tune")) == 2
    on_cpu = validate(_set(yaml.safe_load(yaml.safe_dump(raw_params)), "train.device", "cpu"))
    assert gpu_sized(on_cpu, "train") == []
    assert gpu_sized(on_cpu, "tune") == ["tune.resources_per_trial.gpu: 1 (a GPU for every trial)"]
    # A cluster needs storage every node reaches: a relative storage_path is refused with an address.
    cluster = _set(_set(raw_params, "tune.ray_address", "127.0.0.1:6379"), "tune.storage_path", "s3://bucket/sweeps")
    on_cluster = validate(cluster)
    assert gpu_sized(on_cluster, "tune") == [] and len(gpu_sized(on_cluster, "train")) == 1


@pytest.fixture
def study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    console.configure(None)


def _run(folder: Path, raw: dict, stage: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    code = main([stage])
    return code, capsys.readouterr().err


@no_cuda
@pytest.mark.parametrize("stage", ["check", "train", "tune"])
def test_gpu_sized_params_stop_at_once_with_the_estimate_and_the_cpu_path(study_dir, raw_params, stage, capsys):
    code, err = _run(study_dir, raw_params, stage, capsys)
    assert code == 2, err
    assert f"pedtune {stage}: error: params.yaml is sized for a GPU (maskrcnn_resnet50_fpn at 800-1333 px" in err
    assert "a rough estimate: one training step and one inference of maskrcnn_resnet50_fpn" in err
    assert "dvc exp run -n cpu-quick $(pedtune profile cpu-quick)" in err and "set train.device: cpu" in err
    expected = {"check": "the study about", "train": "the train stage about", "tune": "the tune stage about"}[stage]
    assert expected in err
    assert sorted(p.name for p in study_dir.iterdir()) == ["params.yaml"]  # no store, no data, no outputs
    assert not CONTROL.search(err)


@no_cuda
def test_train_device_cpu_overrides_the_guard(study_dir, raw_params, capsys):
    code, err = _run(study_dir, _set(raw_params, "train.device", "cpu"), "train", capsys)
    # Past the guard: the stage goes on to its inputs, which this empty folder lacks.
    assert code == 1, err
    assert "sized for a GPU" not in err and "data/split.json not found" in err


@no_cuda
def test_tune_still_refuses_a_gpu_per_trial_with_train_device_cpu(study_dir, raw_params, capsys):
    code, err = _run(study_dir, _set(raw_params, "train.device", "cpu"), "tune", capsys)
    assert code == 2, err
    assert "tune.resources_per_trial.gpu: 1 (a GPU for every trial)" in err
    assert "set tune.resources_per_trial.gpu: 0" in err
