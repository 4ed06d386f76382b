"""A stage's run record: which MLflow run it logged, from which commit, in which environment.

The train, tune and evaluate stages each write one beside their outputs (``paths.STAGE_RUNS``), so
that ``pedtune publish`` finds the runs that made the outputs it publishes (a store holds every
earlier run too) and records the package versions and hardware as they were when the stage ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Any

from pedtune.io import write_json
from pedtune.tracking.store import git_commit

# The packages whose versions a published study names; every installed one enters the set's hash.
KEY_PACKAGES = ("torch", "torchvision", "ray", "optuna", "hyperopt", "mlflow", "dvc", "pycocotools")


def cpu_model() -> str:
    """/proc/cpuinfo's model name; elsewhere platform.processor() (empty on most Linux systems, and only
    the architecture on some)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str:
    import torch  # noqa: PLC0415 - only the stages that train call this, and they have torch loaded

    if not torch.cuda.is_available():
        return "none"
    return ", ".join(sorted({torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())}))


def packages() -> dict[str, Any]:
    """The KEY_PACKAGES' versions, and the sha256 of every installed distribution's ``name==version``, sorted."""
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    pins = sorted({f"{dist.metadata['Name'].lower().replace('_', '-')}=={dist.version}" for dist in distributions()
                   if dist.metadata["Name"]})
    return {"versions": {name: installed(name) for name in KEY_PACKAGES},
            "installed_sha256": hashlib.sha256("\n".join(pins).encode()).hexdigest(),
            "installed_count": len(pins)}


def environment() -> dict[str, Any]:
    """Where this process runs: packages, and the driver's hardware (a cluster's worker nodes may differ)."""
    return {"packages": packages(),
            "hardware": {"cpu": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
                         "gpu": gpu_name()}}


def write_run_record(path: Path, stage: str, run_id: str, experiment: str) -> None:
    write_json(path, {"stage": stage, "mlflow_run_id": run_id, "mlflow_experiment": experiment,
                      # HEAD when the stage ran; "-dirty" only says some tracked file (params.yaml under
                      # `dvc exp run`, say) differed: dvc.lock tells publish which files did.
                      "git_commit": git_commit().removesuffix("-dirty"), "environment": environment()})


def read_run_record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
