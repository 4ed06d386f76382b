"""The study on a two-node Ray cluster on 127.0.0.1: trials on a worker that sees neither the data, nor the
repository, nor the MLflow store; the sweep's state in an S3 bucket (moto); MLflow on a real server. The cluster
and the tracking server are those docs/cluster.md's commands bring up: token-authenticated Ray, MLflow's basic-auth.

Drivers run as separate processes, as ``dvc repro`` would start them, so that one can be killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from loopback import (BUCKET, S3, LoopbackCluster, NetNamespace, TrackingServer, listening_sockets, session_sockets,
                      start_cluster, wait_until)
from mlflow.tracking import MlflowClient
from tune_fakes import hold, release
from tune_study import build_study, read_csv, run_states

from pedtune import paths
from pedtune.cli import main
from pedtune.stages.tune import WALL_TIME_EVERY_S, WALL_TIME_FILE
from pedtune.tune.trainable import CHECKPOINT_FILE

# One worker builds the session's S3 server and this file's loopback cluster once (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loopback-cluster")]

HERE = Path(__file__).resolve().parent
FAKE_SWEEP = (
    f"import sys; sys.path[:0] = [{str(HERE.parent / 'tune')!r}, {str(HERE.parent)!r}]\n"
    "import tune_study, tune_fakes\n"
    "from pedtune.config import load_config\n"
    "from pedtune.stages.tune import run_tune\n"
    "run_tune(load_config(), fit_fn=tune_fakes.fake_fit)\n"
)


def cluster_study(root: Path, cluster: LoopbackCluster, tune: dict[str, Any], tracking_uri: str = "",
                  **changes: Any) -> None:
    """A tiny study in ``root`` whose trials run on ``cluster``; MLflow in ``tracking_uri`` if given."""
    build_study(root, {"tune": {"ray_address": cluster.address, **tune}, **changes})
    params = yaml.safe_load((root / "params.yaml").read_text())
    if tracking_uri:  # the team setup: the server's own artifact store, no local one
        params["mlflow"].update(tracking_uri=tracking_uri, artifact_location="")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def start_driver(root: Path, env: dict[str, str]) -> subprocess.Popen:
    # Tune snapshots its state every second, so the test need not wait 10 s for the snapshot naming a checkpoint.
    return subprocess.Popen([sys.executable, "-c", FAKE_SWEEP], cwd=root, env={**env, "TUNE_GLOBAL_CHECKPOINT_S": "1"},
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended already
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def finish(process: subprocess.Popen, timeout_s: float = 400) -> str:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"the driver did not finish in {timeout_s:g} s:\n{output[-5000:]}")
    assert process.returncode == 0, output[-8000:]
    return output


def pedtune(stage: str, root: Path, env: dict[str, str], timeout_s: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pedtune", stage], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


def trial_runs(tracking_uri: str) -> tuple[list, list, MlflowClient]:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("pedtune")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("stage") == "tune"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children, client


def stored_checkpoints(keys: list[str]) -> dict[str, int]:
    """Each trial's newest checkpoint number among the bucket's ``keys``."""
    newest: dict[str, int] = {}
    for key in keys:
        if found := re.search(r"/(trial_\d+_[0-9a-f]+)/checkpoint_(\d+)/", key):
            newest[found[1]] = max(newest.get(found[1], 0), int(found[2]))
    return newest


def checkpointed_mid_run(s3: S3, prefix: str, epochs: int) -> set[str]:
    """The trials that Tune's latest experiment snapshot under ``prefix`` lists with a checkpoint before their
    last epoch whose files are still in the bucket: running trials that a restore resumes from it.

    A checkpoint counts once the driver has the trial's report and its snapshot is in the bucket. The
    snapshot is uploaded in the background and can lag by seconds: a driver lost before it names the
    checkpoint restarts the trial from scratch, one lost after the checkpoint it names was replaced
    cannot restore the trial (so the tests hold the trials while they wait). The snapshot holds each
    trial's checkpoints pickled, hex-encoded, in its JSON.
    """
    keys = s3.keys(prefix)
    states = sorted(key for key in keys if "/experiment_state-" in key)
    if not states:
        return set()
    text = s3.client().get_object(Bucket=BUCKET, Key=states[-1])["Body"].read().decode()
    pickled = b"".join(bytes.fromhex(run) for run in re.findall(r"(?:[0-9a-f]{2}){32,}", text))
    latest: dict[str, tuple[int, str]] = {}  # a trial's newest checkpoint; it holds the one before too
    for path, trial, number in re.findall(rb"%s/(\S*?(trial_\d+_[0-9a-f]+)/checkpoint_(\d+))" % BUCKET.encode(),
                                          pickled):
        latest[trial.decode()] = max(latest.get(trial.decode(), (-1, "")), (int(number), path.decode()))
    # Up to date for the trial: no newer checkpoint in the bucket, so the driver has not yet taken
    # one that would replace it (files land before the driver takes them).
    stored = stored_checkpoints(keys)
    return {trial for trial, (number, path) in latest.items()
            if number + 1 < epochs and f"{path}/{CHECKPOINT_FILE}" in keys and stored.get(trial) == number}


def assert_no_secret(secrets: dict[str, str], folders: list[Path], texts: dict[str, str]) -> None:
    """None of ``secrets`` (name: value) in any file under ``folders`` or in ``texts`` (name: text)."""
    found = []
    for folder in folders:
        for path in (path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()):
            content = path.read_bytes()
            found += [f"{name} in {path}" for name, value in secrets.items() if value.encode() in content]
    found += [f"{name} in {where}" for where, text in texts.items() for name, value in secrets.items() if value in text]
    assert not found, found


def test_the_doc_s_cluster_refuses_a_client_without_the_token_and_listens_only_in_its_namespace(
    cluster: LoopbackCluster, cluster_env: dict[str, str], driver_env: dict[str, str], s3: S3, netns: NetNamespace
):
    join = ("import json, ray; ray.init(address={!r}, logging_level='ERROR'); "
            "print(json.dumps([node['NodeManagerAddress'] for node in ray.nodes() if node['Alive']]))")
    # Without the doc's RAY_AUTH_MODE=token (the token file is in the shared home, as on a node where it was copied).
    refused = subprocess.run([sys.executable, "-c", join.format(cluster.address)], env=cluster_env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "Authentication token is missing or incorrect" in refused.stderr, refused.stderr
    joined = subprocess.run([sys.executable, "-c", join.format(cluster.address)], env=driver_env,
                            capture_output=True, text=True, timeout=120)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert json.loads(joined.stdout.splitlines()[-1]) == ["127.0.0.1", "127.0.0.1"]  # the head and the worker

    ours = session_sockets([*cluster.sessions(), s3.service.process.pid])
    inside = listening_sockets() & ours
    assert len(inside) >= 4, inside  # the GCS, each node's manager and object manager, moto
    with netns.left():
        outside = listening_sockets() & ours
    assert not outside, f"sockets of the test's services listen outside its network namespace: {outside}"


def test_the_doc_s_tracking_server_answers_401_without_credentials(tracking_server: TrackingServer):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{tracking_server.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401


def test_an_unauthenticated_cluster_is_refused_in_seconds_unless_params_say_the_network_is_trusted(
    study: Path, studies: Path, cluster_env: dict[str, str], hold_file: Path, capsys: pytest.CaptureFixture[str]
):
    # The recipe as it was: a head with neither token nor RAY_AUTH_MODE; it also runs the trial (1 CPU).
    open_env = {**cluster_env, "RAY_AUTH_MODE": "disabled"}
    recipe = {"head": ['ray start --head --node-ip-address "$HEAD_IP" --port "$RAY_PORT" --num-cpus 1'], "worker": []}
    unauthenticated = start_cluster([studies], open_env, recipe, workers=0)
    try:
        cluster_study(study, unauthenticated, {"storage_path": f"s3://{BUCKET}/open", "num_samples": 1,
                                               "scheduler": "fifo"}, train={"epochs": 1})
        driver = {**open_env, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1"}
        # The refusal comes before Ray, MLflow and the data: in this process (whose pedtune is imported already),
        # where line coverage sees it; its probe of the cluster is a child process with no token either way.
        capsys.readouterr()
        started = time.monotonic()
        code = main(["tune"])
        stderr = capsys.readouterr().err
        assert code == 2, stderr[-3000:]
        assert f"the Ray cluster at {unauthenticated.address} accepts clients without a token" in stderr
        assert "ray get-auth-token --generate" in stderr and "allow_unauthenticated_cluster" in stderr
        assert time.monotonic() - started < 60
        assert not (study / "mlruns" / "mlflow.db").exists()  # refused before any MLflow run

        params = yaml.safe_load((study / "params.yaml").read_text())
        params["tune"]["allow_unauthenticated_cluster"] = True
        (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        output = finish(start_driver(study, driver))
        assert "accepts clients without a token (tune.allow_unauthenticated_cluster: true)" in output
        rows = read_csv(study / paths.TUNE_DIR / "trials.csv")
        assert [row["status"] for row in rows] == ["COMPLETED"]
    finally:
        unauthenticated.stop()


@dataclass(frozen=True)
class FinishedSweep:
    """A sweep on the cluster, stored in S3 and tracked on the server, whose first driver was killed mid-trial and
    whose second resumed it to its end; what the test of the kill and resume checks, as it stood right after."""

    study: Path
    env: dict[str, str]  # its drivers' environment: the doc's study shell with the MLflow credentials
    killed_at: float  # time.time() when the first driver was killed
    ledger_written_at: float  # when the killed driver last recorded its wall time in the bucket
    recorded_s: float  # the wall time it recorded
    output: str  # the resuming driver's
    rows: list[dict[str, str]]  # trials.csv
    metrics: dict[str, Any]  # metrics/tune.json
    keys: list[str]  # the bucket's keys under the sweep's prefix
    local_results: bool  # whether a ray_results folder appeared in the study
    runs: dict[str, tuple]  # run_states of the runs the sweep made on the server


@pytest.fixture(scope="module")
def finished_sweep(studies: Path, cluster: LoopbackCluster, s3: S3, tracking_server: TrackingServer,
                   driver_env: dict[str, str], credentials: dict[str, str], hold_file: Path,
                   netns: NetNamespace) -> FinishedSweep:
    """One finished tracked sweep for this file's tests (three drivers' worth of CPU on a loaded CI machine):
    the kill-and-resume test checks how it got there, the refused-attempt-and-rerun test reruns it."""
    study = studies / "finished-sweep"
    study.mkdir()
    env = {**driver_env, **credentials}
    with netns.entered(), pytest.MonkeyPatch.context() as patch:
        patch.chdir(study)
        for key, value in credentials.items():  # the fixture's own MLflow client, too
            patch.setenv(key, value)
        cluster_study(study, cluster, {"storage_path": f"s3://{BUCKET}/sweeps", "num_samples": 3,
                                       "max_concurrent": 1, "scheduler": "fifo", "max_failures": 1},
                      tracking_uri=tracking_server.url, train={"epochs": 4})
        client = MlflowClient(tracking_uri=tracking_server.url)
        earlier = set(run_states(client))  # the runs other tests left on the server
        hold(hold_file, after_epoch=2)
        driver = start_driver(study, env)
        try:  # killed mid-trial, once Tune's snapshot in the bucket names its checkpoint and the wall-time ledger is there
            wait_until(lambda: checkpointed_mid_run(s3, "sweeps/", epochs=4)
                       and any(key.endswith(WALL_TIME_FILE) for key in s3.keys("sweeps/")), 240, "a checkpoint", driver)
        finally:
            kill(driver)
            release(hold_file)
        killed_at = time.time()
        (ledger,) = [key for key in s3.keys("sweeps/") if key.endswith(WALL_TIME_FILE)]
        written = s3.client().get_object(Bucket=BUCKET, Key=ledger)
        recorded_s = json.loads(written["Body"].read())["seconds"]

        output = finish(start_driver(study, env))
        runs = {run_id: state for run_id, state in run_states(client).items() if run_id not in earlier}
        return FinishedSweep(
            study, env, killed_at, written["LastModified"].timestamp(), recorded_s, output,
            read_csv(study / paths.TUNE_DIR / "trials.csv"), json.loads((study / paths.TUNE_METRICS).read_text()),
            s3.keys("sweeps/"), (study / "ray_results").exists(), runs)


@dataclass(frozen=True)
class RefusedAttempt:
    result: subprocess.CompletedProcess
    seconds: float  # from the driver's start to its end
    runs_before: dict[str, tuple]  # run_states of the server, before and after the attempt
    runs_after: dict[str, tuple]


@pytest.fixture(scope="module")
def refused_attempt(finished_sweep: FinishedSweep, tracking_server: TrackingServer, credentials: dict[str, str],
                    netns: NetNamespace) -> RefusedAttempt:
    """``pedtune tune`` on the finished sweep with 2 CPUs a trial, which no node has. Resources are not part of the
    sweep's identity: this is the same sweep, refused by the capacity check (which runs before anything is read)."""
    study = finished_sweep.study
    params = (study / "params.yaml").read_text()
    refused = yaml.safe_load(params)
    refused["tune"]["resources_per_trial"]["cpu"] = 2
    with netns.entered(), pytest.MonkeyPatch.context() as patch:
        for key, value in credentials.items():
            patch.setenv(key, value)
        client = MlflowClient(tracking_uri=tracking_server.url)
        before = run_states(client)
        (study / "params.yaml").write_text(yaml.safe_dump(refused, sort_keys=False))
        try:
            started = time.monotonic()
            result = pedtune("tune", study, finished_sweep.env, timeout_s=300)
            seconds = time.monotonic() - started
        finally:
            (study / "params.yaml").write_text(params)
        return RefusedAttempt(result, seconds, before, run_states(client))


def test_a_trial_no_node_can_hold_stops_the_stage_in_seconds(refused_attempt: RefusedAttempt):
    result = refused_attempt.result
    assert result.returncode != 0
    assert "asks for 2 CPU and 0 GPU per trial, but no node of the Ray cluster" in result.stderr, result.stderr[-5000:]
    # What each node offers, each registered under 127.0.0.1 (the namespace has no other address).
    assert "nodes: 127.0.0.1 (head) 0 CPU, 0 GPU; 127.0.0.1 1 CPU, 0 GPU)" in result.stderr
    assert refused_attempt.seconds < 90  # Python, Ray and the data load; nothing waits for a trial


def test_a_storage_folder_the_workers_cannot_see_stops_the_stage_in_seconds(study: Path, cluster, driver_env):
    # Absolute, so taken for a shared mount and checked: the worker has an empty tmpfs there.
    cluster_study(study, cluster, {"storage_path": str(study / "sweeps")})
    result = pedtune("tune", study, driver_env)
    assert result.returncode != 0
    assert f"tune.storage_path {study / 'sweeps'} is a folder that 1 of the cluster's 2 nodes cannot see" in result.stderr
    assert not list((study / "sweeps").glob("sweep-*/trial_*"))


def test_a_sweep_on_the_cluster_stores_in_s3_tracks_on_a_server_and_resumes_after_a_kill(
    finished_sweep: FinishedSweep, cluster: LoopbackCluster, s3: S3, tracking_server: TrackingServer,
    signed_in: None, home: Path, admin_password: str
):
    sweep = finished_sweep
    assert f"resuming the sweep in s3://{BUCKET}/sweeps/sweep-" in sweep.output

    rows = sweep.rows
    assert len(rows) == 3 and all(row["status"] == "COMPLETED" for row in rows), "\n".join(
        f"{row['trial_id']} {row['status']}: {row['error']}" for row in rows)
    keys = sweep.keys
    assert any("experiment_state-" in key for key in keys) and any(key.endswith("tuner.pkl") for key in keys)
    assert not [key for key in keys if "/checkpoint_" in key], "checkpoints left after pruning"
    assert not sweep.local_results  # nothing of the sweep in a local folder
    metrics = sweep.metrics
    assert metrics["num_trials"] == 3 and metrics["wall_time_s"] > 0
    # The killed driver's time counts: recorded while it ran (every WALL_TIME_EVERY_S), added to by the resumed run.
    assert sweep.killed_at - sweep.ledger_written_at <= WALL_TIME_EVERY_S + 5
    assert metrics["wall_time_s"] > sweep.recorded_s > 0

    # The sweep's runs on the server (a refused attempt and a rerun leave them as they were: the next test).
    parents, children, client = trial_runs(tracking_server.url)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(run.data.tags["trial_id"] for run in children) == sorted(row["trial_id"] for row in rows)
    for run in children:
        assert run.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "bbox_mAP")) == [1, 2, 3, 4]
    assert any(run.data.metrics["resumed_from"] > 0 for run in children)  # continued from the bucket
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "tune")}
    assert {"tune/best_params.yaml", "tune/trials.csv", "tune/tune.json"} <= artifacts

    # Neither the Ray token nor the MLflow password in anything the study, Ray or the tracking server wrote.
    bucket = tracking_server.folder.parent / "bucket"
    for key in (key for key in s3.keys() if not key.endswith("/")):  # pyarrow's folder markers hold nothing
        (bucket / key).parent.mkdir(parents=True, exist_ok=True)
        (bucket / key).write_bytes(s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert len(token) >= 32
    assert_no_secret({"the Ray token": token, "the MLflow password": admin_password},
                     [sweep.study, cluster.root, tracking_server.folder.parent], {"the driver's output": sweep.output})


def test_a_refused_attempt_and_a_rerun_leave_a_finished_sweep_s_runs_as_they_were(
    finished_sweep: FinishedSweep, refused_attempt: RefusedAttempt, tracking_server: TrackingServer,
    signed_in: None
):
    sweep = finished_sweep
    client = MlflowClient(tracking_uri=tracking_server.url)
    before = run_states(client)
    assert {run_id: before[run_id] for run_id in sweep.runs} == sweep.runs  # as the sweep left them
    assert sorted((state[3].get("stage", "trial"), state[0]) for state in sweep.runs.values()) == [
        ("trial", "FINISHED"), ("trial", "FINISHED"), ("trial", "FINISHED"), ("tune", "FINISHED")]

    # The refused attempt (2 CPUs a trial) on this same sweep.
    attempt = refused_attempt.result
    assert attempt.returncode != 0 and "asks for 2 CPU and 0 GPU per trial" in attempt.stderr, attempt.stderr[-5000:]
    assert refused_attempt.runs_after == refused_attempt.runs_before

    # Run again as it was: the finished sweep is re-read, its runs stay as they were.
    output = finish(start_driver(sweep.study, sweep.env))
    assert "finished: writing its outputs again from its saved state" in output
    assert run_states(client) == before
    assert len(read_csv(sweep.study / paths.TUNE_DIR / "trials.csv")) == 3


def test_the_evaluate_stage_runs_its_seeds_on_the_cluster(study: Path, cluster: LoopbackCluster, driver_env):
    cluster_study(study, cluster, {"storage_path": f"s3://{BUCKET}/unused"},
                  evaluate={"seeds": [1, 2], "epochs": 1, "num_pictures": 1}, train={"epochs": 1})
    # The search kept the initial configuration: one training per seed.
    train = yaml.safe_load((study / "params.yaml").read_text())["train"]
    (study / paths.TUNE_DIR).mkdir(parents=True)
    (study / paths.TUNE_DIR / "best_params.yaml").write_text(yaml.safe_dump(train))
    result = pedtune("evaluate", study, driver_env, timeout_s=600)
    assert result.returncode == 0, result.stderr[-8000:]
    assert f"Ray cluster at {cluster.address}" in result.stderr
    metrics = json.loads((study / paths.EVALUATE_METRICS).read_text())
    assert metrics["initial"]["bbox_mAP"]["mean"] is not None


def test_a_lost_worker_node_s_trial_resumes_on_another_and_the_sweep_completes(
    study: Path, cluster: LoopbackCluster, s3: S3, driver_env, hold_file: Path
):
    first = cluster.workers[0]
    cluster.add_worker()
    cluster_study(study, cluster, {"storage_path": f"s3://{BUCKET}/failover", "num_samples": 2, "max_concurrent": 2,
                                   "scheduler": "fifo", "max_failures": 2}, train={"epochs": 6})
    hold(hold_file, after_epoch=2)
    driver = start_driver(study, driver_env)
    try:  # both trials held before their third epoch, their second checkpoint named in Tune's snapshot
        wait_until(lambda: len(checkpointed_mid_run(s3, "failover/", epochs=6)) == 2, 240,
                   "a checkpoint of each running trial", driver)
        cluster.kill_worker(first)  # one trial ran there (one CPU per node)
    except BaseException:
        kill(driver)
        raise
    finally:
        release(hold_file)
    output = finish(driver)
    rows = read_csv(study / paths.TUNE_DIR / "trials.csv")
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"], output[-5000:]
    assert sorted(int(row["retries"]) for row in rows) == [0, 1]
    assert json.loads((study / paths.TUNE_METRICS).read_text())["num_retried"] == 1
    assert "retried 1x from its checkpoint" in output
    parents, children, client = trial_runs(f"sqlite:///{study}/mlruns/mlflow.db")
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    for run in children:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "bbox_mAP")) == [1, 2, 3, 4, 5, 6]
    retried = [run for run in children if run.data.metrics["resumed_from"] > 0]
    assert len(retried) == 1  # from its last checkpoint, not from the start
