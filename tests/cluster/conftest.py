"""A two-node Ray cluster on 127.0.0.1 whose worker cannot see the study, S3 storage on moto's server, a
tracking server, and a study folder for each test under the one folder the workers cannot see: all inside a
network namespace of the tests' own (only ``lo``), the Ray nodes and the tracking server brought up by
docs/cluster.md's commands."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tune")]

from loopback import (  # noqa: E402
    BIN,
    BUCKET,
    S3,
    LoopbackCluster,
    NetNamespace,
    TrackingServer,
    cluster_recipe,
    shell_environment,
    start_cluster,
    start_moto,
    start_tracking_server,
)
from tune_fakes import HOLD_ENV  # noqa: E402

# Ray's and MLflow's credentials come from the doc's commands, never from the environment pytest runs in.
CREDENTIAL_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_USERNAME",
                  "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PYTHONPATH")


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNamespace]:
    if os.geteuid() != 0:
        pytest.skip("the cluster tests run their servers in a network namespace of their own: unshare -n and setns "
                    "need root")
    namespace = NetNamespace()
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture(autouse=True)
def inside_netns(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the services runs, and starts its drivers, inside their namespace."""
    if not {"s3", "cluster", "tracking_server"} & set(request.fixturenames):
        yield
        return
    with request.getfixturevalue("netns").entered():
        yield


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory, netns: NetNamespace) -> Iterator[S3]:
    with netns.entered():
        service = start_moto(tmp_path_factory.mktemp("moto"))
        env = {"AWS_ENDPOINT_URL": service.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        storage = S3(service, env)
        try:
            storage.client().create_bucket(Bucket=BUCKET)
        except BaseException:
            service.stop()
            raise
    try:
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
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nodes' and drivers' home: where the doc's ``ray get-auth-token --generate`` writes ~/.ray/auth_token."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def cluster_env(s3: S3, hold_file: Path, home: Path) -> dict[str, str]:
    """What every process of the cluster (nodes and drivers) shares before the doc's commands: AWS settings, a home
    of its own, this interpreter's ``ray`` and ``mlflow`` first on the PATH, and the fake trials' hold."""
    env = {key: value for key, value in os.environ.items() if key not in CREDENTIAL_ENV}
    env.update(s3.env, HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    env[HOLD_ENV] = str(hold_file)
    return env


@pytest.fixture(scope="module")
def cluster(studies: Path, cluster_env: dict[str, str], netns: NetNamespace) -> Iterator[LoopbackCluster]:
    with netns.entered():
        loopback = start_cluster([studies], cluster_env, cluster_recipe(), workers=1)
    try:
        yield loopback
    finally:
        loopback.stop()


@pytest.fixture(scope="session")
def admin_password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def credentials(admin_password: str) -> dict[str, str]:
    """The doc's admin on the tracking server, as MLflow's clients read it from the environment."""
    return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": admin_password}


@pytest.fixture
def signed_in(credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own MLflow clients sign in to the tracking server as the admin."""
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory, cluster_env: dict[str, str], admin_password: str,
                    netns: NetNamespace) -> Iterator[TrackingServer]:
    with netns.entered():
        server = start_tracking_server(tmp_path_factory.mktemp("tracking"), cluster_env, admin_password,
                                       f"s3://{BUCKET}/mlflow-artifacts")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def driver_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """A driver's environment: the doc's study shell, plus this checkout's source (the driver runs from it)."""
    env = shell_environment(cluster_recipe()["driver"], cluster_env)
    return {**env, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def study(studies: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's study folder, the working directory (stage paths are relative to it)."""
    folder = studies / request.node.name
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder
