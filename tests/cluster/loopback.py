"""Real services on 127.0.0.1 for the cluster tests: a Ray head and worker nodes, moto's S3 server, an MLflow server.

Every process is started in its own session and stopped with that session, never by name (other
Ray instances may run on the machine; Ray's workers run in process groups of their own). A worker node runs in a private mount namespace
(``unshare -m``) with empty tmpfs mounted over the study folders and the project's source, so
its trials find neither data, nor repository, nor MLflow store: only the pinned dependencies.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import boto3

BIN = Path(sys.executable).parent
BUCKET = "pedtune-sweeps"
OBJECT_STORE_BYTES = 200 * 1024**2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout_s: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready within {timeout_s:g} s")


def kill_session(session: int, sig: signal.Signals) -> None:
    """Signal every process of a session: a process started with ``start_new_session`` and all it started."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session:
                    os.kill(int(entry), sig)
            except ProcessLookupError:  # ended meanwhile
                pass


def stop(process: subprocess.Popen, timeout_s: float = 5) -> None:
    """SIGTERM the process's group (it was started in a session of its own), then SIGKILL what is left of
    its session (also children that outlived their parent, and Ray's workers in their own groups)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    kill_session(process.pid, signal.SIGKILL)
    process.wait()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Service:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        stop(self.process)


@dataclass(frozen=True)
class S3:
    service: Service
    env: dict[str, str]  # the standard AWS settings every node and the driver get

    def client(self):
        return boto3.client("s3", endpoint_url=self.service.url, region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def start_moto(log_dir: Path) -> Service:
    port = free_port()
    log = log_dir / "moto.log"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(f"{url}/moto-api/"), 60, "moto S3 server", process)
    return Service(process, url, log)


def start_mlflow(root: Path) -> Service:
    """``mlflow server`` with its own SQLite backend and artifact store, as a team would run it."""
    port = free_port()
    log = root / "mlflow-server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination",
               str(root / "artifacts"), "--workers", "1"]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(f"{url}/health"), 120, "mlflow server", process)
    return Service(process, url, log)


def hidden_from_workers(extra: Sequence[Path]) -> list[Path]:
    """The project's source as this interpreter finds it (checkout, editable install) and ``extra``."""
    repo = Path(__file__).resolve().parents[2]
    paths = {repo, *extra}
    for pth in Path(sysconfig.get_paths()["purelib"]).glob("__editable__*pedtune*.pth"):
        paths.update(Path(line.strip()) for line in pth.read_text().splitlines() if line.strip().startswith("/"))
    # A path inside another is hidden with it (and its mount point is gone once the outer tmpfs is on).
    kept = [path for path in paths if path.exists()]
    return sorted(path for path in kept if not any(other != path and path.is_relative_to(other) for other in kept))


@dataclass
class LoopbackCluster:
    """A head node with no CPUs (no trial can run there) and worker nodes that cannot see the study."""

    root: Path  # short: Ray's socket paths live under the temp dirs
    hidden: list[Path]
    env: dict[str, str]
    head: subprocess.Popen | None = None
    address: str = ""
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_head(self) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.head = self._ray_start(
            "head", ["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false",
                     "--dashboard-agent-listen-port", str(free_port())])
        self._wait_started("head", self.head)

    def add_worker(self, num_cpus: int = 1) -> subprocess.Popen:
        name = f"worker{len(self.workers) + 1}"
        mounts = " && ".join(f"mount -t tmpfs -o size=1m tmpfs {path}" for path in self.hidden)
        # Proof that the node cannot reach the code: importing pedtune must fail in its namespace.
        probe = f"! {sys.executable} -c 'import pedtune' 2>/dev/null"
        ray = " ".join(self._ray_command(name, ["--address", self.address, "--num-cpus", str(num_cpus),
                                                "--dashboard-agent-listen-port", str(free_port())]))
        # Not root (a CI runner as a user): a user namespace maps the user to root inside, which may mount.
        unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "-m"]
        command = [*unshare, "sh", "-c", f"{mounts} && cd / && {probe} && exec {ray}"]
        worker = self._spawn(name, command)
        self.workers.append(worker)
        self._wait_started(name, worker)
        return worker

    def _wait_started(self, name: str, process: subprocess.Popen) -> None:
        log = self.root / f"{name}.log"
        wait_until(lambda: b"Ray runtime started" in log.read_bytes(), 120, f"Ray {name} (see {log})", process)

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """The node is lost as a machine would be: every process of it SIGKILLed at once (its trials' workers
        too, which a signal to the node's process group would miss)."""
        kill_session(worker.pid, signal.SIGKILL)
        worker.wait()

    def stop(self) -> None:
        for process in [*self.workers, *([self.head] if self.head else [])]:
            stop(process)
        shutil.rmtree(self.root, ignore_errors=True)

    def _ray_command(self, name: str, args: list[str]) -> list[str]:
        temp = self.root / name
        temp.mkdir(exist_ok=True)
        return [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp),
                "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats", *args]

    def _ray_start(self, name: str, args: list[str]) -> subprocess.Popen:
        return self._spawn(name, self._ray_command(name, args))

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("wb")
        return subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_cluster(hidden: Sequence[Path], env: dict[str, str], workers: int = 1, worker_cpus: int = 1) -> LoopbackCluster:
    cluster = LoopbackCluster(Path(tempfile.mkdtemp(prefix="pr", dir="/tmp")), hidden_from_workers(hidden), env)
    try:
        cluster.start_head()
        for _ in range(workers):
            cluster.add_worker(worker_cpus)
    except BaseException:
        cluster.stop()
        raise
    return cluster
