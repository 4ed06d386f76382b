"""The run-time estimate and the CPU guard: GPU-sized params stop check/train/tune on a machine
without CUDA within seconds, naming the estimated time and the CPU path; train.device: cpu runs."""

from __future__ import annotations

import re
import subprocess
import sys
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
    MachineSpeed,
    Workload,
    estimate,
    gpu_sized,
    measure,
    sweep_trial_epochs,
    workload,
)
from pedtune.engine.model_cost import COSTS_FILE, TRAIN_FACTOR, ArchCost, costs_json, count_costs, read_costs
from pedtune.model.factory import build_model

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


def test_the_pixel_part_scales_with_padded_pixels_and_the_heads_with_their_regions(raw_params):
    config = validate(raw_params)  # 512 sampled regions (128 positives at most), 1000 proposals, 100 detections
    cost = ArchCost(pixel=2.0, box=10.0, mask=100.0)
    train, inference = cost.image_flops(config.model, 100, 130)  # padded to 128 x 160
    assert train == TRAIN_FACTOR * (2.0 * 128 * 160 + 10.0 * 512 + 100.0 * 128)
    assert inference == 2.0 * 128 * 160 + 10.0 * 1000 + 100.0 * 100


def test_the_estimate_is_the_model_s_flops_at_the_machine_s_speed(raw_params):
    config = validate(raw_params)
    speed = MachineSpeed("cpu", train=4e9, inference=8e9)
    work = Workload({"train": 10, "val": 2, "test": 3}, 200, 200, "test")
    found = estimate(config, speed, work)
    train_flops, eval_flops = read_costs().archs[config.model.arch].image_flops(config.model, 200, 200)
    assert found.image_flops == (train_flops, eval_flops)
    train_img, eval_img = train_flops / 4e9, eval_flops / 8e9
    assert found.epoch_s == pytest.approx(10 * train_img + 2 * eval_img)
    assert found.train_s == pytest.approx(10 * found.epoch_s)
    assert found.tune_s == pytest.approx(sweep_trial_epochs(config) * found.epoch_s)
    # 3 seeds x 2 configurations, 10 epochs each, then the test split once per run
    assert found.evaluate_s == pytest.approx(6 * (10 * (10 * train_img + 2 * eval_img) + 3 * eval_img))


def test_the_committed_model_costs_are_what_counting_gives():
    assert COSTS_FILE.read_text(encoding="utf-8") == costs_json(count_costs()), "run `pedtune model-costs`"


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


def test_the_probe_measures_a_speed_for_training_and_inference():
    speed = measure(torch.device("cpu"))
    assert speed.train > 0 and speed.inference > 0 and speed.device.startswith("cpu")


def _timed_full_step(model_config, height: int, width: int) -> tuple[float, float]:
    """The best of two training steps and two inferences of the real model, in CPU seconds; eight
    large boxes, so that the sampled positives (which the mask head trains on) reach their cap."""
    torch.manual_seed(0)
    net = build_model(model_config)
    image = torch.rand(3, height, width)
    boxes = torch.tensor([[x, y, x + width / 2, y + height / 2] for x in (0, width / 4, width / 2)
                          for y in (0, height / 4, height / 2)][:8])
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
        mask[y0:y1, x0:x1] = 1
    target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64), "masks": masks}

    def cpu_seconds(step) -> float:
        start = time.process_time()
        step()
        return time.process_time() - start

    def train_step() -> None:
        net.train()
        sum(net([image], [target]).values()).backward()

    def inference() -> None:
        net.eval()
        with torch.inference_mode():
            net([image])

    return (min(cpu_seconds(train_step) for _ in range(2)), min(cpu_seconds(inference) for _ in range(2)))


def test_the_estimate_is_within_its_stated_factor_of_a_step_timed_at_full_size(raw_params, monkeypatch):
    # The light model at 192-256 px with a few regions, so that its full-size step is cheap to time.
    # Both sides in the process's CPU seconds, so that other work on a busy machine does not
    # decide the comparison.
    monkeypatch.setattr(estimate_module, "time", SimpleNamespace(perf_counter=time.process_time))
    raw_params["model"].update(arch="maskrcnn_mobilenet_v3_large_fpn", weights="none", min_size=192, max_size=256,
                               box_batch_size_per_image=64, rpn_test_proposals=100, detections_per_img=20)
    config = validate(raw_params)
    speeds = [measure(torch.device("cpu")) for _ in range(2)]
    speed = MachineSpeed("cpu", max(found.train for found in speeds), max(found.inference for found in speeds))
    work = Workload({"train": 1, "val": 1, "test": 0}, 192, 256, "test")
    guess = estimate(config, speed, work)
    train_s, eval_s = guess.image_flops[0] / speed.train, guess.image_flops[1] / speed.inference
    timed = _timed_full_step(config.model, 192, 256)
    for guessed, measured in ((train_s, timed[0]), (eval_s, timed[1])):
        assert measured / HONEST_WITHIN <= guessed <= measured * HONEST_WITHIN, (guessed, measured)


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
    assert "a rough estimate: maskrcnn_resnet50_fpn at 800x1067 px with the configured regions counts" in err
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


@no_cuda
def test_check_on_the_gpu_defaults_imports_neither_torchvision_nor_the_trackers(study_dir, raw_params):
    # What keeps `pedtune check` within seconds on a CPU: torch and the probe, no model built.
    (study_dir / "params.yaml").write_text(yaml.safe_dump(raw_params))
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pedtune", "check"], capture_output=True,
                          text=True, cwd=study_dir, timeout=300)
    assert done.returncode == 2 and "sized for a GPU" in done.stderr, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported
    assert not {name for name in imported if name.split(".")[0] in ("torchvision", "mlflow", "ray")}
