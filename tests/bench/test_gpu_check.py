"""Keep bench/gpu_check.sh, the prepared run for a lent GPU machine, working: device time is
scarce, so a step that fails on an argument must fail here first. On the CPU, at a tiny size,
with the light model; nothing is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"
RESULTS = ("epoch_profile_cuda", "gpu_packing_cuda", "epoch_profile_cuda_fp32_bf16", "mask_paste_cuda",
           "evaluation_cuda_epochs4", "train_step_cuda_steps60", "train_step_cuda_steps60_div128")
TINY_ON_CPU = ("--synthetic --num-images 8 --image-size 48x64 --min-size 48 --max-size 64 --device cpu --threads 1 "
               "--set model.arch=maskrcnn_mobilenet_v3_large_fpn --set model.box_batch_size_per_image=32")


# Each step's own counts cut to the fewest that still run its every branch (two epochs: a later
# epoch's share, and a profile started between epochs; two shares: more than one worker), so the
# dry run costs a minute or two, not many. The epoch profiles keep the hooks a bare GPU image has
# (no MLflow there); tests/bench/test_epoch_profile.py runs the MLflow hook.
FEWER_ON_CPU = {
    "GPU_CHECK_EXTRA_epoch_profile": "--epochs 2 --train-images 2 --hooks checkpoint",
    # Its trials' loaders without worker processes: the loader's workers cost 3x the rest on the CPU
    # (the epoch profile's step keeps params.yaml's 2 workers).
    "GPU_CHECK_EXTRA_gpu_packing": "--shares 1 0.5 --train-images 2 --val-images 1 --set data.num_workers=0",
    "GPU_CHECK_EXTRA_epoch_profile_precisions": "--epochs 1 --train-images 2 --hooks checkpoint",
    "GPU_CHECK_EXTRA_mask_paste": "--images 2 --reps 1",
    "GPU_CHECK_EXTRA_evaluation": "--epochs 2 --train-images 2 --proposals 100",
    "GPU_CHECK_EXTRA_train_step": "--steps 1 --reps 1",
    "GPU_CHECK_EXTRA_train_step_div128": "--steps 1 --reps 1",
}


def _run(out: Path, *args: str, extra: str = TINY_ON_CPU) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **FEWER_ON_CPU, "PYTHON": sys.executable, "GPU_CHECK_EXTRA": extra,
           "GPU_CHECK_WHEELS": str(out.parent / "no-wheels")}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_every_step_runs_and_writes_what_the_table_reads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run(out, "unused-with-synthetic", str(out), "700")
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "gpu_check.log").read_text()
    assert "== done: every step passed" in log and ": skipped," not in log
    assert "8 skipped" in log  # the CUDA tests, on this machine without a GPU
    for name in RESULTS:
        assert json.loads((out / f"{name}.json").read_text())["benchmark"] == name.split("_cuda")[0]
    # The defaults' epochs: the first unprofiled, the second under the profiler (started between them).
    (run,) = json.loads((out / "epoch_profile_cuda.json").read_text())["runs"]
    assert [e["epoch"] for e in run["epochs"]] == [1, 2] and run["profile"]["epoch"] == 2 and run["hooks"] == ["checkpoint"]
    assert run["profile"]["top_ops_by_self_cpu_time"] and run["epochs"][1]["first_shape_steps"] == 0
    (run,) = json.loads((out / "epoch_profile_cuda_fp32_bf16.json").read_text())["runs"]  # on the CPU: fp32 only
    assert run["precision"] == "fp32" and run["profile"] is None and len(run["epochs"]) == 1
    # The per-step words reached their step only, after its own arguments.
    assert log.count("--steps 1 --reps 1 --json") == 2 and log.count("--shares 1 0.5") == 1
    assert log.count("--epochs 2 --train-images 2 --hooks checkpoint --json") == 1
    sys.path.insert(0, str(REPO))
    from bench import run_all

    table = run_all.table(out)
    assert table.count("3. mask paste with host boxes") == 1 and table.count("1. training step") == 2
    assert table.count("8. trials per hour by GPU share per trial") == 1
    # Both epoch_profile results give the same fp32 row on the CPU: the later one is kept.
    assert table.count("9. one epoch of fit") == 1 and table.count("9. profiled epoch 2 of 2") == 1


def test_steps_beyond_the_budget_are_skipped_and_the_run_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run(out, "unused", str(out), "25")
    assert done.returncode == 1
    log = (out / "gpu_check.log").read_text()
    # The first step's limit is cut to the budget; the last one cannot start in what is left.
    assert "== environment (limit 25 s)" in log and "== environment: exit 0" in log
    assert "== train_step_div128: skipped" in log and "a step failed or was skipped" in log


def test_without_its_arguments_it_says_how_to_call_it(tmp_path: Path) -> None:
    done = _run(tmp_path, "only-data")
    assert done.returncode == 2 and "usage: bench/gpu_check.sh DATA OUT [BUDGET_S]" in done.stderr
