"""Shared fixtures: a tiny synthetic PennFudanPed, params.yaml and a config small enough to train
in seconds, and, where present, the real dataset copy."""

from __future__ import annotations

import os

# The test command runs two xdist workers on a 2-core machine: each worker's torch on 2 intra-op
# threads would contend with the other's (tests/unit/test_model_and_engine.py on -n 2 took 67 s
# that way against 41 s on one thread each). One thread per worker, and per process the tests
# start (pedtune, Ray workers) unless their params set train.threads. Set before torch is
# imported, so its thread pool starts that size.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from pedtune.config import StudyConfig, validate  # noqa: E402
from pedtune.config.schema import SyntheticConfig  # noqa: E402
from pedtune.data.dataset import SampleSet, list_stems  # noqa: E402
from pedtune.data.synthetic import write_synthetic_dataset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_PENNFUDAN = REPO_ROOT.parent / "shared" / "data" / "PennFudanPed"


@pytest.fixture
def synthetic_cfg() -> SyntheticConfig:
    """Small enough to write in well under a second, big enough for a 3-way split."""
    return SyntheticConfig(num_images=6, height=48, width=64, max_instances=3, seed=0)


@pytest.fixture
def synthetic_root(tmp_path: Path, synthetic_cfg: SyntheticConfig) -> Path:
    """A fresh synthetic dataset folder (the equivalent of ``PennFudanPed/``) per test."""
    root = tmp_path / "synthetic" / "PennFudanPed"
    write_synthetic_dataset(synthetic_cfg, root)
    return root


@pytest.fixture
def synthetic_store(synthetic_root: Path) -> SampleSet:
    return SampleSet(synthetic_root, list_stems(synthetic_root), min_size=48, max_size=64)


@pytest.fixture
def raw_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


@pytest.fixture
def tiny_config(raw_params: dict) -> StudyConfig:
    """params.yaml shrunk to the light model on 48-64 px images for 2 epochs, on the CPU."""
    raw_params["model"].update(arch="maskrcnn_mobilenet_v3_large_fpn", weights="none", min_size=48, max_size=64,
                               detections_per_img=10, box_batch_size_per_image=64)
    raw_params["train"].update(epochs=2, batch_size=2, warmup_epochs=0.5, device="cpu", lr=0.005)
    raw_params["data"].update(num_workers=0)
    raw_params["tune"]["asha"].update(grace_period=1)
    raw_params["train"]["threads"] = 1  # the CPUs are shared: more threads only contend
    return validate(raw_params)


@pytest.fixture(scope="module")
def module_ray() -> Iterator[None]:
    """One private Ray for a test module's sweeps and runs, which pedtune's stages use as a caller's Ray
    (:func:`pedtune.ray_cluster.ray_session`): each ``ray.init`` and shutdown costs ~6 s and ~3.5 CPU-s.
    A module that uses it carries an ``xdist_group`` of its own, so that one worker runs it whole."""
    from pedtune.ray_cluster import ray_session

    with ray_session(""):
        yield


@pytest.fixture
def real_pennfudan() -> Path:
    """The real dataset copy at ``../shared/data/PennFudanPed``; skips the test if absent."""
    if not (REAL_PENNFUDAN / "PNGImages").is_dir():
        pytest.skip(f"real PennFudanPed copy not found at {REAL_PENNFUDAN}")
    return REAL_PENNFUDAN


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: on several workers (``-n``) the longest files then start first instead of
    running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
