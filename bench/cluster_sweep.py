"""Sweep wall time ÷ ideal on the two-node loopback cluster the tests use.

A Ray head with no CPUs and one worker node (in a private mount namespace: no data, no
repository, no MLflow store there) on 127.0.0.1, the sweep's state in S3 (moto's server), the
project's code shipped by ``runtime_env``. The driver is ``pedtune.stages.tune.run_tune`` in
its own process, as the stage runs, with a training function that sleeps ``--epoch-s`` per
epoch (set in the nodes' environment, where the trials run) and reports (and checkpoints) every
epoch through the real hooks. Ideal = trials × epochs × epoch_s ÷ the worker's CPUs; the
stage's wall time is what ``metrics/tune.json`` records (from the driver's start to its
summary: Ray connection, runtime_env, data, trials).

    python -m bench.cluster_sweep                    # 4 trials x 3 epochs x 5 s, 2 at a time
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from bench import common

BUCKET = "pedtune-bench"
TESTS = common.REPO / "tests"
DRIVER = (
    f"import sys; sys.path[:0] = [{str(TESTS / 'tune')!r}, {str(TESTS)!r}]\n"
    "import tune_study, tune_fakes\n"
    "from pedtune.config import load_config\n"
    "from pedtune.stages.tune import run_tune\n"
    "run_tune(load_config(), fit_fn=tune_fakes.fake_fit)\n"
)


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epoch-s", type=float, default=5.0)
    p.add_argument("--worker-cpus", type=int, default=2, help="the worker node's CPUs: trials at a time")
    args = p.parse_args(argv)
    args.json = args.json.resolve() if args.json else None  # the study is built in its own working folder
    common.setup(args)
    sys.path[:0] = [str(TESTS / "cluster"), str(TESTS / "tune"), str(TESTS)]
    from loopback import BIN, cluster_recipe, shell_environment, start_cluster, start_moto
    from tune_study import build_study

    with tempfile.TemporaryDirectory(prefix="pedtune-bench-cluster-") as tmp:
        root = Path(tmp)
        moto = start_moto(root)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        (root / "home").mkdir()  # the nodes' home: docs/cluster.md's commands write the Ray token there
        env.update(AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", HOME=str(root / "home"),
                   PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
                   # The nodes' environment: a trial on a `ray start` node does not see the driver's.
                   PEDTUNE_FAKE_EPOCH_S=str(args.epoch_s))
        study = root / "study"
        study.mkdir()
        cluster, cwd = None, os.getcwd()
        try:
            subprocess.run([sys.executable, "-c", f"import boto3; boto3.client('s3').create_bucket(Bucket='{BUCKET}')"],
                           check=True, env=env)
            cluster = start_cluster([study], env, cluster_recipe(), workers=1, worker_cpus=args.worker_cpus)
            os.chdir(study)
            build_study(study, {
                "train": {"epochs": args.epochs},
                "tune": {"ray_address": cluster.address, "storage_path": f"s3://{BUCKET}/sweeps",
                         "num_samples": args.trials, "max_concurrent": args.worker_cpus, "scheduler": "fifo"},
            })
            driver_env = {**shell_environment(cluster_recipe()["driver"], env), "PYTHONPATH": os.pathsep.join(filter(None, [str(common.REPO / "src"),
                                                                             os.environ.get("PYTHONPATH")]))}
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", DRIVER], cwd=study, env=driver_env, capture_output=True,
                                  text=True, timeout=1800)
            process_s = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"the sweep failed:\n{done.stderr[-5000:]}")
            metrics = json.loads((study / "metrics" / "tune.json").read_text())
            params = yaml.safe_load((study / "params.yaml").read_text())
        finally:
            os.chdir(cwd)
            if cluster is not None:
                cluster.stop()
            moto.stop()
    slept = args.trials * args.epochs * args.epoch_s
    if metrics["trial_time_s"] < slept:
        raise SystemExit(f"the trials took {metrics['trial_time_s']} s in all, less than the {slept:g} s their "
                         f"epochs sleep: PEDTUNE_FAKE_EPOCH_S did not reach the worker node")
    ideal = slept / args.worker_cpus
    result = {
        "trials": args.trials, "epochs": args.epochs, "epoch_s": args.epoch_s, "concurrency": args.worker_cpus,
        "nodes": "head (0 CPU) + 1 worker (unshare -m, no study or source)", "storage": "s3 (moto server)",
        "searcher": params["tune"]["searcher"],
        "ideal_s": ideal,
        "stage_wall_s": metrics["wall_time_s"],
        "trial_time_s": metrics["trial_time_s"],  # summed over trials: the sleeps and each trial's own costs
        "process_wall_s": round(process_s, 1),
        "ratio_wall_vs_ideal": round(metrics["wall_time_s"] / ideal, 3),
        "ratio_process_vs_ideal": round(process_s / ideal, 3),
        "num_trials": metrics["num_trials"],
    }
    common.log(f"stage wall {metrics['wall_time_s']:.1f} s vs ideal {ideal:.1f} s: {result['ratio_wall_vs_ideal']:.2f}×")
    return common.emit("cluster_sweep", args, result)


if __name__ == "__main__":
    main()
