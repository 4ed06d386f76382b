"""A checkpoint's report time: S3-compatible storage (moto's server on 127.0.0.1) vs the local hard-link path.

Each repetition writes the light model's training state (weights, buffers and SGD momentum, as
a trial's ``state.pt``) into a fresh staging folder and persists it the way Ray does on every
``tune.report(checkpoint=...)`` (``StorageContext.persist_current_checkpoint``), with the
storage :func:`pedtune.tune.storage.open_storage` makes of ``tune.storage_path``: a folder
(checkpoint staged inside the sweep folder, hard-linked into place) or ``s3://`` (staged in a
temporary folder, uploaded). The two alternate; the figure is the median of the paired ratios.

    python -m bench.checkpoint_storage               # 5 pairs
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import common
from pedtune.config import StudyConfig
from pedtune.model.factory import build_model

BUCKET = "pedtune-bench"


def training_state(config: StudyConfig) -> dict:
    """What a trial's checkpoint holds for this model: the state dict and one momentum buffer per trained parameter."""
    model = build_model(config.model)
    momentum = {name: torch.zeros_like(p) for name, p in model.named_parameters() if p.requires_grad}
    return {"model": model.state_dict(), "optimizer": {"momentum": momentum}, "epoch": 1}


def persist(storage, experiment: str, state: dict, index: int) -> dict[str, float]:
    """Stage the state where the trial would and persist it as Ray does; seconds of each step."""
    import pyarrow.fs as pafs
    from ray import tune
    from ray.train._internal.storage import StorageContext

    from pedtune.tune.storage import checkpoint_staging, linking_filesystem

    context = StorageContext(storage_path=storage.root, experiment_dir_name=experiment,
                             storage_filesystem=storage.filesystem, trial_dir_name="trial",
                             current_checkpoint_index=index)
    staging = checkpoint_staging(storage, experiment)
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="epoch-", dir=staging))
    try:
        started = time.perf_counter()
        torch.save(state, folder / "state.pt")
        saved = time.perf_counter()
        size_mb = (folder / "state.pt").stat().st_size / 2**20
        filesystem = linking_filesystem() if staging is not None else pafs.LocalFileSystem()
        context.persist_current_checkpoint(tune.Checkpoint(str(folder), filesystem=filesystem))
        persisted = time.perf_counter()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"save_s": saved - started, "persist_s": persisted - saved, "report_s": persisted - started, "mb": size_mb}


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="pairs of reports (local, S3)")
    args = p.parse_args(argv)
    common.setup(args)
    sys.path.insert(0, str(common.REPO / "tests" / "cluster"))
    from loopback import start_moto

    config = common.study_config(args, {"model": {"arch": common.ARCHS["light"], "weights": "none"}})
    state = training_state(config)
    with tempfile.TemporaryDirectory(prefix="pedtune-bench-storage-") as tmp:
        moto = start_moto(Path(tmp))
        try:
            os.environ.update(AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                              AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
            subprocess.run([sys.executable, "-c", f"import boto3; boto3.client('s3').create_bucket(Bucket='{BUCKET}')"],
                           check=True)
            from pedtune.tune.storage import open_storage

            storages = {"local_hardlink": open_storage(str(Path(tmp) / "sweeps")),
                        "s3_moto": open_storage(f"s3://{BUCKET}/sweeps")}
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in storages}
            for rep in range(args.reps + 1):  # the first pair warms up (imports, connections)
                for name, storage in storages.items():
                    timing = persist(storage, "sweep", state, rep)
                    common.log(f"{name} rep {rep}: report {timing['report_s']:.2f} s (save {timing['save_s']:.2f}, "
                               f"persist {timing['persist_s']:.2f})")
                    if rep:
                        runs[name].append(timing)
        finally:
            moto.stop()
    ratios = [s3["report_s"] / local["report_s"] for local, s3 in zip(runs["local_hardlink"], runs["s3_moto"])]
    result = {
        "checkpoint_mb": round(runs["s3_moto"][0]["mb"], 1),
        "reps": args.reps,
        "seconds": {name: {key: common.stats([t[key] for t in timings]) for key in ("save_s", "persist_s", "report_s")}
                    for name, timings in runs.items()},
        "ratio_s3_vs_local_report": common.stats(ratios),
    }
    common.log(f"report to S3 (moto) ÷ local hard-link: {result['ratio_s3_vs_local_report']['median']:.2f}×")
    return common.emit("checkpoint_storage", args, result)


if __name__ == "__main__":
    main()
