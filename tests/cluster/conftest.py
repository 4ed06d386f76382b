"""A two-node Ray cluster on 127.0.0.1 whose worker cannot see the study, S3 storage on moto's server,
and a study folder for each test under the one folder the workers cannot see."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tune")]

from loopback import BUCKET, S3, LoopbackCluster, Service, start_cluster, start_mlflow, start_moto  # noqa: E402
from tune_fakes import HOLD_ENV  # noqa: E402

@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    service = start_moto(tmp_path_factory.mktemp("moto"))
    env = {"AWS_ENDPOINT_URL": service.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    storage = S3(service, env)
    try:
        storage.client().create_bucket(Bucket=BUCKET)
        yield storage
    finally:
        service.stop()


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parent of every cluster test's study: an empty tmpfs over it on the worker nodes."""
    return tmp_path_factory.mktemp("studies")


@pytest.fixture(scope="session")
def hold_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake trials' hold (``tune_fakes.hold``): outside the studies, so the worker nodes see it."""
    return tmp_path_factory.mktemp("hold") / "hold"


@pytest.fixture(scope="session")
def cluster_env(s3: S3, hold_file: Path) -> dict[str, str]:
    """What every process of the cluster (nodes and drivers) shares: AWS settings, Ray's auth token and the
    fake trials' hold."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # Ray 2.60 enables token authentication when a token exists; one of its own for this cluster.
    env.update(s3.env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex, RAY_USAGE_STATS_ENABLED="0")
    env[HOLD_ENV] = str(hold_file)
    return env


@pytest.fixture(scope="module")
def cluster(studies: Path, cluster_env: dict[str, str]) -> Iterator[LoopbackCluster]:
    loopback = start_cluster([studies], cluster_env, workers=1)
    try:
        yield loopback
    finally:
        loopback.stop()


@pytest.fixture
def driver_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """A driver's environment: the cluster's, plus this checkout's source (the driver runs from it)."""
    return {**cluster_env, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def study(studies: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's study folder, the working directory (stage paths are relative to it)."""
    folder = studies / request.node.name
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[Service]:
    server = start_mlflow(tmp_path)
    try:
        yield server
    finally:
        server.stop()
