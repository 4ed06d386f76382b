"""Real services on 127.0.0.1 for the cluster tests: a Ray head and worker nodes, moto's S3 server, an MLflow server,
all inside a network namespace of their own with only ``lo`` up, so that no packet leaves loopback and no port
is reachable from the machine's network (Ray 2.60 binds its gRPC servers to every interface). The Ray nodes and
the tracking server are started by the commands docs/cluster.md gives, read from it.

Every process is started in its own session and stopped with that session, never by name (other
Ray instances may run on the machine; Ray's workers run in process groups of their own). A worker node runs in a private mount namespace
(``unshare -m``) with empty tmpfs mounted over the study folders and the project's source, so
its trials find neither data, nor repository, nor MLflow store: only the pinned dependencies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DOC = REPO / "docs" / "cluster.md"
CLONE_NEWNET = 0x40000000

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


class NetNamespace:
    """A network namespace with only ``lo`` up, held open by a sleeping process; the calling thread enters it
    for a block (``setns``), and what it starts there stays there."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec sleep infinity"],
                                       stdout=subprocess.PIPE, start_new_session=True)
        if self.holder.stdout.readline().strip() != b"up":
            self.holder.kill()
            raise RuntimeError("could not bring lo up in a new network namespace (unshare -n, ip link)")
        self._inside = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)
        self._outside = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _switch(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test network namespace")

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        self._switch(self._inside)
        try:
            yield
        finally:
            self._switch(self._outside)

    @contextlib.contextmanager
    def left(self) -> Iterator[None]:
        """Back in the machine's namespace for a block (from inside)."""
        self._switch(self._outside)
        try:
            yield
        finally:
            self._switch(self._inside)

    def close(self) -> None:
        os.close(self._inside)
        os.close(self._outside)
        stop(self.holder)


def listening_sockets() -> set[int]:
    """The socket inodes listening (TCP) in the calling thread's network namespace."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/thread-self/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(int(fields[9]))
    return inodes


def session_sockets(sessions: Sequence[int]) -> set[int]:
    """The socket inodes every process of these sessions holds."""
    inodes = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getsid(int(entry)) not in sessions:
                continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if found := re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{entry}/fd/{fd}")):
                        inodes.add(int(found[1]))
    return inodes


def doc_block(containing: str) -> str:
    """The fenced shell block of docs/cluster.md that contains ``containing`` (there must be one)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", CLUSTER_DOC.read_text(), re.M | re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"docs/cluster.md has {len(found)} bash blocks with {containing!r}"
    return found[0]


def cluster_recipe() -> dict[str, list[str]]:
    """docs/cluster.md's "By hand" commands: ``head``, ``worker`` and ``driver`` (the study's shell), each a list of
    shell lines, split at the block's ``# on the head node`` / ``# on every worker node`` / ``# in the shell`` comments."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in doc_block("ray start --head").splitlines():
        if line.startswith("# "):
            current = next(key for key, start in (("head", "# on the head node"), ("worker", "# on every worker node"),
                                                  ("driver", "# in the shell that runs the study"))
                           if line.startswith(start))
            sections[current] = []
        elif line.strip():
            sections[current].append(line)
    assert set(sections) == {"head", "worker", "driver"}, sections
    return sections


def with_exec(lines: list[str], extra: list[str]) -> str:
    """``lines`` as a script whose ``ray start`` (the last line) replaces the shell, with ``extra`` options."""
    assert lines[-1].startswith("ray start "), lines
    return "\n".join([*lines[:-1], f"exec {lines[-1]} {' '.join(extra)}"]) + "\n"


def shell_environment(lines: list[str], env: dict[str, str]) -> dict[str, str]:
    """The environment ``lines`` leave in a shell started with ``env``."""
    script = "\n".join([*lines, "env -0"])
    output = subprocess.run(["bash", "-euc", script], env=env, capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in output.decode().split("\0") if "=" in item)


def kill_session(session: int, sig: signal.Signals) -> None:
    """Signal every process of a session: a process started with ``start_new_session`` and all it started."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session:
                    os.kill(int(entry), sig)
            except ProcessLookupError:  # ended meanwhile
                pass


def stop(*processes: subprocess.Popen, timeout_s: float = 5) -> None:
    """SIGTERM each process's group (each was started in a session of its own), wait for them together, then
    SIGKILL what is left of their sessions (also children that outlived their parent, and Ray's workers in their
    own groups)."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
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


@dataclass
class TrackingServer(Service):
    folder: Path = Path()  # the server's folder (/srv/mlflow in the doc)


def start_tracking_server(root: Path, env: dict[str, str], admin_password: str, artifacts: str) -> TrackingServer:
    """docs/cluster.md's tracking server, its commands run as written but in ``root`` (for /srv/mlflow), with its
    artifacts at ``artifacts`` (for s3://bucket/mlflow-artifacts), one worker, no job runner, and the password typed in."""
    script = doc_block("--app-name basic-auth").replace("/srv/mlflow", str(root / "srv"))
    script = script.replace("s3://bucket/mlflow-artifacts", artifacts)
    assert script.count("\nmlflow server ") == 1, script
    script = script.replace("\nmlflow server ", "\nexec mlflow server --workers 1 ")
    log = root / "mlflow-server.log"
    # MLflow 3's job runner (7 more Python processes, ~3 CPU-s each to start) serves none of what the tests use.
    env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(["bash", "-euc", script], env=env, stdin=subprocess.PIPE, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    process.stdin.write(f"{admin_password}\n".encode())
    process.stdin.close()
    port = re.search(r"--port (\d+)", script)[1]
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _http_ok(f"{url}/health"), 120, f"mlflow server (see {log})", process)
    return TrackingServer(process, url, log, root / "srv")


def hidden_from_workers(extra: Sequence[Path]) -> list[Path]:
    """The project's source as this interpreter finds it (checkout, editable install) and ``extra``."""
    paths = {REPO, *extra}
    for pth in Path(sysconfig.get_paths()["purelib"]).glob("__editable__*pedtune*.pth"):
        paths.update(Path(line.strip()) for line in pth.read_text().splitlines() if line.strip().startswith("/"))
    # A path inside another is hidden with it (and its mount point is gone once the outer tmpfs is on).
    kept = [path for path in paths if path.exists()]
    return sorted(path for path in kept if not any(other != path and path.is_relative_to(other) for other in kept))


@dataclass
class LoopbackCluster:
    """A head node with no CPUs (no trial can run there) and worker nodes that cannot see the study, started by
    the ``head`` and ``worker`` commands of ``recipe`` (docs/cluster.md's), with a port of its own."""

    root: Path  # short: Ray's socket paths live under the temp dirs
    hidden: list[Path]
    env: dict[str, str]
    recipe: dict[str, list[str]]
    head: subprocess.Popen | None = None
    address: str = ""
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_head(self) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.env = {**self.env, "HEAD_IP": "127.0.0.1", "RAY_PORT": str(port)}
        script = with_exec(self.recipe["head"], [*self._harness("head"), "--include-dashboard", "false"])
        self.head = self._spawn("head", ["bash", "-euc", script])
        self._wait_started("head", self.head)

    def add_worker(self, num_cpus: int = 1) -> subprocess.Popen:
        name = f"worker{len(self.workers) + 1}"
        mounts = " && ".join(f"mount -t tmpfs -o size=1m tmpfs {path}" for path in self.hidden)
        # Proof that the node cannot reach the code: importing pedtune must fail in its namespace.
        probe = f"! {sys.executable} -c 'import pedtune' 2>/dev/null"
        script = self.root / f"{name}.sh"
        # The doc's worker runs with the head's CPUs option replaced: a worker has ``num_cpus``.
        script.write_text(with_exec(self.recipe["worker"], [*self._harness(name), "--num-cpus", str(num_cpus)]))
        # Not root (a CI runner as a user): a user namespace maps the user to root inside, which may mount.
        unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "-m"]
        command = [*unshare, "sh", "-c", f"{mounts} && cd / && {probe} && exec bash -eu {script}"]
        worker = self._spawn(name, command)
        self.workers.append(worker)
        self._wait_started(name, worker)
        return worker

    def sessions(self) -> list[int]:
        return [process.pid for process in [*self.workers, *([self.head] if self.head else [])]]

    def _wait_started(self, name: str, process: subprocess.Popen) -> None:
        log = self.root / f"{name}.log"
        wait_until(lambda: b"Ray runtime started" in log.read_bytes(), 120, f"Ray {name} (see {log})", process)

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """The node is lost as a machine would be: every process of it SIGKILLed at once (its trials' workers
        too, which a signal to the node's process group would miss)."""
        kill_session(worker.pid, signal.SIGKILL)
        worker.wait()

    def stop(self, keep: bool = False) -> None:
        stop(*self.workers, *([self.head] if self.head else []))
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def _harness(self, name: str) -> list[str]:
        """What the test adds to the doc's ``ray start``: the node in the foreground, its files in the cluster's
        folder, a small object store, a dashboard agent port of its own (nodes share the machine)."""
        temp = self.root / name
        temp.mkdir(exist_ok=True)
        return ["--block", "--temp-dir", str(temp), "--object-store-memory", str(OBJECT_STORE_BYTES),
                "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port())]

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("wb")
        return subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_cluster(hidden: Sequence[Path], env: dict[str, str], recipe: dict[str, list[str]], workers: int = 1,
                  worker_cpus: int = 1) -> LoopbackCluster:
    cluster = LoopbackCluster(Path(tempfile.mkdtemp(prefix="pr", dir="/tmp")), hidden_from_workers(hidden), env, recipe)
    try:
        cluster.start_head()
        for _ in range(workers):
            cluster.add_worker(worker_cpus)
    except BaseException:
        cluster.stop()
        raise
    return cluster
