"""Ray for the tune and evaluate stages: a local instance, or a cluster whose node the driver runs on.

The project's code travels with the job (``runtime_env`` ``py_modules``), so a worker node
needs only the pinned dependencies, never a checkout; the data travels through Ray's object
store. Before any work is queued, :func:`check_capacity` makes sure some node can hold one
trial (Tune and Ray would otherwise wait forever), and :func:`check_shared_folder` that a
folder named as storage is the same on every node.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

import pedtune
from pedtune import console
from pedtune.config.schema import ResourcesConfig, TuneConfig
from pedtune.engine.estimate import CPU_PATH
from pedtune.errors import ClusterError, UnauthenticatedClusterError

AUTOSCALE_DETECT_S = 12.0
AUTOSCALE_POLL_S = 10.0
AUTOSCALE_REPORT_S = 60.0
AUTH_PROBE_TIMEOUT_S = 60.0
# Ray 2.60's token authentication: the mode, and the token itself (else RAY_AUTH_TOKEN_PATH's file, else ~/.ray/auth_token).
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
REMEDY = (
    "Restart the cluster with token authentication: `export RAY_AUTH_MODE=token` and "
    "`ray get-auth-token --generate` before `ray start --head`, RAY_AUTH_MODE=token and the same token on every node "
    "and here (docs/cluster.md, \"Bring up a cluster\"); or, on a network only trusted people reach, set "
    "tune.allow_unauthenticated_cluster: true"
)
# Run in a child process with no token and token mode off: Ray loads a process's token once and keeps it.
# Prints "refused" when the cluster's GCS rejects a client without the token, "open" when it answers one.
_AUTH_PROBE = """
import sys
from ray._private.services import canonicalize_bootstrap_address_or_die
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
address = canonicalize_bootstrap_address_or_die(sys.argv[1])
print("address", address, flush=True)
try:
    GcsClient(address=address).internal_kv_get(b"pedtune-auth-probe", None, timeout=20)
except AuthenticationError:
    print("refused", flush=True)
else:
    print("open", flush=True)
"""


def runtime_env() -> dict[str, Any]:
    """The pedtune package of this checkout, shipped to every worker that runs a trial or a run."""
    return {"py_modules": [str(Path(pedtune.__file__).parent)], "excludes": ["__pycache__", "*.pyc"]}


def _probe_environment() -> dict[str, str]:
    """This process's environment without any Ray token, token mode off and no home to find ~/.ray/auth_token in."""
    env = {key: value for key, value in os.environ.items() if key not in (AUTH_TOKEN_ENV, AUTH_TOKEN_PATH_ENV)}
    return {**env, AUTH_MODE_ENV: "disabled", "HOME": os.devnull}


def requires_token(address: str) -> bool:
    """Whether the cluster at ``address`` ("auto" or host:port) refuses a client that has no token."""
    try:
        probe = subprocess.run([sys.executable, "-c", _AUTH_PROBE, address], env=_probe_environment(),
                               capture_output=True, text=True, timeout=AUTH_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"the Ray cluster at {address} did not answer within {AUTH_PROBE_TIMEOUT_S:g} s") from None
    verdict = probe.stdout.split()[-1:] if probe.returncode == 0 else []
    if verdict not in (["refused"], ["open"]):
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {last}")
    return verdict == ["refused"]


def check_authenticated(tune: TuneConfig) -> None:
    """Raise :class:`UnauthenticatedClusterError` when ``tune.ray_address`` names a cluster that answers clients
    without its token, unless ``tune.allow_unauthenticated_cluster``; :class:`ClusterError` when this process
    could not join a cluster that requires one. Nothing to check for the private Ray (no address)."""
    address = tune.ray_address
    if not address:
        return
    if not requires_token(address):
        if tune.allow_unauthenticated_cluster:
            print(f"[cluster] the Ray cluster at {address} accepts clients without a token "
                  "(tune.allow_unauthenticated_cluster: true)", file=sys.stderr, flush=True)
            return
        raise UnauthenticatedClusterError(
            f"the Ray cluster at {address} accepts clients without a token: anyone who reaches its ports can run "
            f"code on every node. {REMEDY}."
        )
    # An explicit address never turns token mode on by itself (only "auto" finds a token file on its own).
    if address != "auto" and os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        raise ClusterError(
            f"the Ray cluster at {address} requires its token: set RAY_AUTH_MODE=token here, with the token in "
            "~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN)"
        )


@contextmanager
def _private_token() -> Iterator[None]:
    """Token authentication, with a fresh token held in this process's environment, for a private Ray.

    Its servers listen on every interface of the machine (Ray 2.60 binds its gRPC ports to all of them),
    so it gets a token as a cluster does; the token reaches Ray's processes through their environment
    and is written to no file. Ray reads the mode and the token once per process: both are reloaded.
    """
    from ray._raylet import AuthenticationTokenLoader, Config

    saved = {key: os.environ.get(key) for key in (AUTH_MODE_ENV, AUTH_TOKEN_ENV)}
    os.environ.update({AUTH_MODE_ENV: "token", AUTH_TOKEN_ENV: secrets.token_hex(32)})
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def ray_session(address: str, log_to_driver: bool = True) -> Iterator[None]:
    """``ray.init`` for the stage, shut down when the block ends.

    ``address`` "" starts a private Ray on this machine ("local"), with a token of its own
    (:func:`_private_token`): ``ray.init()`` without an address would join a cluster that
    ``ray start`` left running here, or the one RAY_ADDRESS names. With ``address`` "", a Ray
    this process has already joined (a caller's ``ray.init``: a notebook, a test module) is
    used as it is and left running, as :func:`pedtune.replay.sweep.run_sweeps` does.
    """
    if not address and ray.is_initialized():
        with console.plain_ray_prefixes():
            yield
        return
    with contextlib.ExitStack() as stack:
        if not address:
            stack.enter_context(_private_token())
        stack.enter_context(console.plain_ray_prefixes())
        ray.init(address=address or "local", runtime_env=runtime_env(), include_dashboard=False,
                 log_to_driver=log_to_driver, logging_level=logging.WARNING)
        stack.callback(ray.shutdown)
        yield


@dataclass(frozen=True)
class NodeOffer:
    address: str
    cpu: float
    gpu: float
    head: bool

    def holds(self, want: ResourcesConfig) -> bool:
        return self.cpu >= want.cpu and self.gpu >= want.gpu

    def __str__(self) -> str:
        return f"{self.address}{' (head)' if self.head else ''} {self.cpu:g} CPU, {self.gpu:g} GPU"


def node_offers() -> list[NodeOffer]:
    """Every live node's total CPU and GPU (what a single trial could get there)."""
    return [
        NodeOffer(node["NodeManagerAddress"], float(node["Resources"].get("CPU", 0)),
                  float(node["Resources"].get("GPU", 0)), "node:__internal_head__" in node["Resources"])
        for node in ray.nodes()
        if node["Alive"]
    ]


def _launching() -> bool:
    """Whether the cluster's autoscaler reports nodes being launched (the status ``ray status`` prints)."""
    from ray.experimental.internal_kv import _internal_kv_get

    report = _internal_kv_get("__autoscaling_status")
    if not report:
        return False
    status = json.loads(report).get("autoscaler_report") or {}
    return bool(status.get("pending_launches") or status.get("pending_nodes"))


def _autoscales_for(bundle: dict[str, float]) -> bool:
    """Ask the autoscaler for ``bundle`` and watch whether it starts a node for it.

    A cluster brought up by ``ray up`` launches one within an update or two (5 s each); the
    read-only autoscaler of a ``ray start`` cluster never does, and its request is withdrawn.
    """
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[bundle])
    deadline = time.monotonic() + AUTOSCALE_DETECT_S
    while time.monotonic() < deadline:
        if _launching():
            return True
        time.sleep(1.0)
    request_resources(bundles=[])
    return False


def _describe(want: ResourcesConfig, offers: list[NodeOffer], what: str, address: str) -> str:
    asked = f"tune.resources_per_trial asks for {want.cpu:g} CPU and {want.gpu:g} GPU per {what}"
    if address:
        # The head first, then by address: Ray lists nodes in no fixed order.
        ordered = sorted(offers, key=lambda offer: (not offer.head, offer.address))
        nodes = "; ".join(str(offer) for offer in ordered) or "no live node"
        where = f"no node of the Ray cluster at {address} can hold one (nodes: {nodes})"
    else:
        offer = offers[0] if offers else NodeOffer("", 0, 0, True)
        where = f"this machine offers {offer.cpu:g} CPU and {offer.gpu:g} GPU"
    remedy = "Lower them to fit, or add a node that has them" if address else f"Lower them to fit, or on a CPU, {CPU_PATH}"
    return f"{asked}, but {where}. {remedy}."


def check_capacity(want: ResourcesConfig, what: str, address: str, timeout_s: float | None = None) -> None:
    """Raise :class:`ClusterError` unless some live node can hold one ``what`` (trial, run).

    Per node, not the cluster's totals: a trial runs on one node. On an autoscaling cluster the
    stage asks the autoscaler for such a node and waits for it, saying so every minute.
    """
    offers = node_offers()
    if any(offer.holds(want) for offer in offers):
        return
    bundle = {"CPU": want.cpu, **({"GPU": want.gpu} if want.gpu else {})}
    if not address or not _autoscales_for(bundle):
        raise ClusterError(_describe(want, offers, what, address))
    started = reported = time.monotonic()
    print(f"[cluster] {_describe(want, offers, what, address)}; the cluster autoscales: waiting for such a node",
          file=sys.stderr, flush=True)
    while not any(offer.holds(want) for offer in offers):
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise ClusterError(_describe(want, offers, what, address) + f"; none came within {timeout_s:g} s")
        if time.monotonic() - reported >= AUTOSCALE_REPORT_S:
            reported = time.monotonic()
            print(f"[cluster] still waiting for a node with {want.cpu:g} CPU, {want.gpu:g} GPU "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        time.sleep(AUTOSCALE_POLL_S)
        offers = node_offers()
    print("[cluster] a node that can hold it joined", file=sys.stderr, flush=True)


def _sees(path: str) -> bool:
    return os.path.exists(path)


def check_shared_folder(folder: str, setting: str) -> None:
    """Raise :class:`ClusterError` unless every live node sees ``folder`` as this one does.

    A marker file written here is looked for by a zero-CPU task pinned to each node: a folder
    only the driver's node has would fail the trials placed elsewhere at their first checkpoint.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    Path(folder).mkdir(parents=True, exist_ok=True)
    marker = Path(folder) / f".pedtune-shared-{uuid.uuid4().hex}"
    marker.touch()
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        probe = ray.remote(num_cpus=0, max_retries=0)(_sees)
        answers = ray.get([
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                str(marker))
            for node in nodes
        ], timeout=120)
    finally:
        marker.unlink(missing_ok=True)
    blind = [node["NodeManagerAddress"] for node, seen in zip(nodes, answers) if not seen]
    if blind:
        raise ClusterError(
            f"{setting} {folder} is a folder that {len(blind)} of the cluster's {len(nodes)} nodes cannot see "
            f"({', '.join(blind)}): their trials could not save checkpoints. Use an object store "
            "(s3://bucket/sweeps, gs://...) or a folder on a mount every node shares at the same path"
        )
