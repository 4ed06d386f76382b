"""Which sweep a configuration belongs to: the name of its Ray experiment folder and MLflow parent run.

Re-running ``pedtune tune`` with the same identity resumes (or re-reads) that sweep; any
change that alters what the trials compute starts a new one. Settings that only affect how
the sweep is run (resources, Ray address, storage path, retries, MLflow) are left out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pedtune.config import StudyConfig
from pedtune.result_code import computation_code, fingerprint
from pedtune.tune.searchers import n_initial_points


def code_fingerprint() -> str:
    """The trial's code (:func:`pedtune.result_code.computation_code`), hashed by module name and content.

    The sweep driver, its progress and tracking are left out, so a fix to them still resumes a sweep.
    """
    return fingerprint(computation_code("tune"))


def sweep_identity(config: StudyConfig, dataset_hash: str) -> dict[str, Any]:
    tune = config.tune
    return {
        "searcher": tune.searcher,
        "seed": tune.seed,
        "num_samples": tune.num_samples,
        "n_initial_points": n_initial_points(tune),
        # The searcher's concurrency limit is restored with it, so a new limit needs a new sweep.
        "max_concurrent": tune.max_concurrent,
        "scheduler": tune.scheduler,
        "asha": {**tune.asha.model_dump(), "max_t": config.asha_max_t} if tune.scheduler == "asha" else None,
        "metric": tune.metric,
        "mode": tune.mode,
        "search_space": [dist.model_dump() for dist in tune.search_space],
        # The thread count changes what a trial computes on the CPU; null derives it from the resources.
        "train": {**config.train.model_dump(), "threads": config.torch_threads},
        "model": config.model.model_dump(),
        # How many images the fetch demands checks the data; dataset_hash is what it is.
        "data": config.data.model_dump(exclude={"cache", "cache_budget_gib", "num_workers", "expected_images"}),
        "dataset_hash": dataset_hash,
        "code": code_fingerprint(),
    }


def sweep_id(config: StudyConfig, dataset_hash: str) -> str:
    """A short stable hash of :func:`sweep_identity` (12 hex digits)."""
    text = json.dumps(sweep_identity(config, dataset_hash), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
