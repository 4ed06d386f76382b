"""Ray for the tune and evaluate stages: a local instance, or a cluster whose node the driver runs on.

The project's code travels with the job (``runtime_env`` ``py_modules``), so a worker node
needs only the pinned dependencies, never a checkout; the data travels through Ray's object
store. Before any work is queued, :func:`check_capacity` makes sure some node can hold one
trial (Tune and Ray would otherwise wait forever), and :func:`check_shared_folder` that a
folder named as storage is the same on every node.
"""

from __future__ import annotations

import json
import logging
import os
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
from pedtune.config.schema import ResourcesConfig
from pedtune.engine.estimate import CPU_PATH
from pedtune.errors import ClusterError

AUTOSCALE_DETECT_S = 12.0
AUTOSCALE_POLL_S = 10.0
AUTOSCALE_REPORT_S = 60.0


def runtime_env() -> dict[str, Any]:
    """The pedtune package of this checkout, shipped to every worker that runs a trial or a run."""
    return {"py_modules": [str(Path(pedtune.__file__).parent)], "excludes": ["__pycache__", "*.pyc"]}


@contextmanager
def ray_session(address: str, log_to_driver: bool = True) -> Iterator[None]:
    """``ray.init`` for the stage, shut down when the block ends.

    ``address`` "" starts a private Ray on this machine ("local"): ``ray.init()`` without an
    address would join a cluster that ``ray start`` left running here, or the one RAY_ADDRESS names.
    """
    with console.plain_ray_prefixes():
        ray.init(address=address or "local", runtime_env=runtime_env(), include_dashboard=False,
                 log_to_driver=log_to_driver, logging_level=logging.WARNING)
        try:
            yield
        finally:
            ray.shutdown()


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
        nodes = "; ".join(str(offer) for offer in offers) or "no live node"
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
