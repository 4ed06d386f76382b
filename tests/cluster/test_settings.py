"""What a cluster needs is checked when params.yaml is read; the sweep's storage works the same on S3 as in a folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from loopback import BUCKET, S3

from pedtune.config import ConfigError, validate
from pedtune.stages.tune import WALL_TIME_FILE, prune_checkpoints, record_sweep_seconds, restorable, sweep_seconds
from pedtune.tune.storage import STAGING_FOLDER, checkpoint_staging, open_storage


def with_tune(raw: dict, **tune) -> dict:
    raw["tune"].update(tune)
    return raw


def test_a_ray_client_address_is_refused_with_how_to_run_on_a_remote_cluster(raw_params: dict):
    with pytest.raises(ConfigError, match="Ray Client address.*ray job submit --address http://<head>:8265"):
        validate(with_tune(raw_params, ray_address="ray://10.0.0.1:10001", storage_path="s3://b/s"))


@pytest.mark.parametrize("address", ["auto", "10.0.0.1:6379", "head.internal:6379"])
def test_auto_and_host_port_are_addresses(raw_params: dict, address: str):
    assert validate(with_tune(raw_params, ray_address=address, storage_path="s3://b/s")).tune.ray_address == address


def test_an_address_that_is_none_of_the_forms_is_refused(raw_params: dict):
    with pytest.raises(ConfigError, match="not \"\" .*\"auto\" or host:port"):
        validate(with_tune(raw_params, ray_address="10.0.0.1", storage_path="s3://b/s"))


def test_a_folder_of_this_machine_as_storage_is_refused_with_an_address(raw_params: dict):
    with pytest.raises(ConfigError, match="storage_path 'ray_results' is a folder of this machine"):
        validate(with_tune(raw_params, ray_address="auto"))


@pytest.mark.parametrize("storage", ["s3://bucket/sweeps", "gs://bucket/sweeps", "/mnt/shared/sweeps"])
def test_object_stores_and_absolute_mounts_are_cluster_storage(raw_params: dict, storage: str):
    assert validate(with_tune(raw_params, ray_address="auto", storage_path=storage)).tune.storage_path == storage


def test_uncached_data_is_refused_on_a_cluster(raw_params: dict):
    raw_params["data"]["cache"] = False
    with pytest.raises(ConfigError, match="data.cache: false .* set data.cache: true"):
        validate(with_tune(raw_params, ray_address="auto", storage_path="s3://b/s"))
    raw_params["tune"]["ray_address"] = ""
    assert not validate(raw_params).data.cache  # on one machine it stays a choice


def test_a_relative_storage_path_is_resolved_from_the_repository_root(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # `dvc exp run --temp` runs in a copy; DVC_ROOT names the original
    storage = open_storage("ray_results")
    assert storage.local and storage.root == str(tmp_path / "ray_results")
    assert checkpoint_staging(storage, "sweep-x") == tmp_path / "ray_results" / "sweep-x" / STAGING_FOLDER


@pytest.mark.xdist_group("loopback-cluster")  # the session's S3 server, built once on that group's worker
def test_the_sweep_state_lives_in_the_bucket(s3: S3, monkeypatch: pytest.MonkeyPatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)  # the endpoint comes from AWS_ENDPOINT_URL, as for MinIO or Ceph
    storage = open_storage(f"s3://{BUCKET}/unit/")
    assert not storage.local and storage.root == f"{BUCKET}/unit" and storage.describe("x") == f"s3://{BUCKET}/unit/x"
    assert checkpoint_staging(storage, "sweep-x") is None  # staged on the trial's node, uploaded by Ray

    record_sweep_seconds(storage, "sweep-x", 5.0)  # no sweep there yet: nothing recorded
    assert sweep_seconds(storage, "sweep-x") == 0.0 and not s3.keys("unit/")
    client = s3.client()
    for key in ("tuner.pkl", "trial_0001_a/result.json", "trial_0001_a/checkpoint_000002/state.pt",
                "trial_0002_b/checkpoint_000000/state.pt"):
        client.put_object(Bucket=BUCKET, Key=f"unit/sweep-x/{key}", Body=b"x")
    assert not restorable(storage, "sweep-x")  # no experiment state saved yet
    record_sweep_seconds(storage, "sweep-x", 61.2)
    assert sweep_seconds(storage, "sweep-x") == 61.2

    prune_checkpoints(storage, "sweep-x")
    objects = [key for key in s3.keys("unit/") if not key.endswith("/")]  # pyarrow keeps empty folders as markers
    assert sorted(objects) == [f"unit/sweep-x/{key}" for key in
                                        (WALL_TIME_FILE, "trial_0001_a/result.json", "tuner.pkl")]


def test_an_autoscaling_cluster_is_waited_for_with_a_message_until_a_node_can_hold_a_trial(monkeypatch, capsys):
    from pedtune import ray_cluster as cluster
    from pedtune.config.schema import ResourcesConfig

    small, big = cluster.NodeOffer("10.0.0.2", 2, 0, False), cluster.NodeOffer("10.0.0.3", 8, 1, False)
    joined = iter([[small], [small], [small, big]])
    monkeypatch.setattr(cluster, "node_offers", lambda: next(joined))
    monkeypatch.setattr(cluster, "_autoscales_for", lambda bundle: bundle == {"CPU": 4.0, "GPU": 1.0})
    monkeypatch.setattr(cluster, "AUTOSCALE_POLL_S", 0.01)
    cluster.check_capacity(ResourcesConfig(cpu=4, gpu=1), "trial", "10.0.0.1:6379")
    err = capsys.readouterr().err
    assert "no node of the Ray cluster at 10.0.0.1:6379 can hold one (nodes: 10.0.0.2 2 CPU, 0 GPU)" in err
    assert "the cluster autoscales: waiting for such a node" in err and "a node that can hold it joined" in err


def test_a_cluster_that_cannot_grow_fails_at_once(monkeypatch):
    from pedtune import ray_cluster as cluster
    from pedtune.config.schema import ResourcesConfig
    from pedtune.errors import ClusterError

    monkeypatch.setattr(cluster, "node_offers", lambda: [cluster.NodeOffer("10.0.0.1", 0, 0, True)])
    monkeypatch.setattr(cluster, "_autoscales_for", lambda bundle: False)
    with pytest.raises(ClusterError, match=r"per run, but no node .* \(nodes: 10.0.0.1 \(head\) 0 CPU, 0 GPU\)"):
        cluster.check_capacity(ResourcesConfig(cpu=1, gpu=0), "run", "10.0.0.1:6379")


def test_the_refusal_lists_the_head_first_then_the_nodes_by_address(monkeypatch):
    # Ray lists its nodes in no fixed order; the message (and a test reading it) should not vary with it.
    from pedtune import ray_cluster as cluster
    from pedtune.config.schema import ResourcesConfig
    from pedtune.errors import ClusterError

    offers = [cluster.NodeOffer("10.0.0.3", 1, 0, False), cluster.NodeOffer("10.0.0.1", 0, 0, True),
              cluster.NodeOffer("10.0.0.2", 1, 0, False)]
    monkeypatch.setattr(cluster, "node_offers", lambda: offers)
    monkeypatch.setattr(cluster, "_autoscales_for", lambda bundle: False)
    nodes = "10.0.0.1 (head) 0 CPU, 0 GPU; 10.0.0.2 1 CPU, 0 GPU; 10.0.0.3 1 CPU, 0 GPU"
    with pytest.raises(ClusterError, match=rf"\(nodes: {nodes.replace('(', '[(]').replace(')', '[)]')}\)"):
        cluster.check_capacity(ResourcesConfig(cpu=2, gpu=0), "run", "10.0.0.1:6379")


@pytest.mark.parametrize("uri", ["http://alice:s3cret@10.0.0.1:5000", "https://alice@mlflow.internal"])
def test_a_tracking_uri_with_credentials_is_refused_naming_the_environment_variables(raw_params: dict, uri: str):
    raw_params["mlflow"]["tracking_uri"] = uri
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") as refused:
        validate(raw_params)
    assert "s3cret" not in str(refused.value)  # the error is logged: it must not repeat the password
    raw_params["mlflow"]["tracking_uri"] = "http://10.0.0.1:5000"
    assert validate(raw_params).mlflow.tracking_uri == "http://10.0.0.1:5000"


def test_an_open_cluster_is_refused_unless_allowed_and_the_private_ray_is_not_probed(raw_params: dict, monkeypatch):
    from pedtune import ray_cluster as cluster
    from pedtune.errors import UnauthenticatedClusterError

    probed = []
    monkeypatch.setattr(cluster, "requires_token", lambda address: probed.append(address) or False)
    config = validate(with_tune(raw_params, ray_address="10.0.0.1:6379", storage_path="s3://b/s"))
    with pytest.raises(UnauthenticatedClusterError, match="accepts clients without a token.*RAY_AUTH_MODE=token"):
        cluster.check_authenticated(config.tune)
    cluster.check_authenticated(config.tune.model_copy(update={"allow_unauthenticated_cluster": True}))
    cluster.check_authenticated(config.tune.model_copy(update={"ray_address": ""}))
    assert probed == ["10.0.0.1:6379", "10.0.0.1:6379"]
