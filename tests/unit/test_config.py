from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter

from pedtune.config import ConfigError, load_config, validate, with_train_overrides
from pedtune.config.schema import StudyConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_shipped_params_and_profile_are_valid_and_have_the_same_keys(raw):
    default = load_config(REPO / "params.yaml")
    quick = load_config(REPO / "profiles" / "cpu-quick.yaml")
    quick_raw = yaml.safe_load((REPO / "profiles" / "cpu-quick.yaml").read_text())
    assert isinstance(default, StudyConfig) and quick.model.arch == "maskrcnn_mobilenet_v3_large_fpn"

    def keys(tree, prefix=""):
        out = set()
        for k, v in tree.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, f"{prefix}{k}.")
        return out

    assert keys(raw) == keys(quick_raw)
    smoke = load_config(REPO / "profiles" / "smoke.yaml")  # README's smoke run: offline, synthetic
    assert (smoke.data.source, smoke.model.weights) == ("synthetic", "none")
    assert keys(raw) == keys(yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text()))


def _defaults_differing_from(model: type[BaseModel], shipped: dict, prefix: str = "") -> list[str]:
    differing = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            differing += _defaults_differing_from(field.annotation, shipped[name], f"{prefix}{name}.")
        elif not field.is_required():
            default = TypeAdapter(field.annotation).dump_python(field.get_default(call_default_factory=True))
            if default != shipped[name]:
                differing.append(f"{prefix}{name}: schema {default!r}, params.yaml {shipped[name]!r}")
    return differing


def test_schema_defaults_are_the_shipped_params():
    # docs/params.md gives params.yaml's values as the defaults: a key left out must mean the same.
    assert _defaults_differing_from(StudyConfig, load_config(REPO / "params.yaml").model_dump()) == []


def _set(raw: dict, dotted: str, value) -> dict:
    changed = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = changed
    for part in parents:
        node = node[part]
    node[last] = value
    return changed


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("train.lr", -0.1, "train.lr"),
        ("train.lr", 0, "train.lr"),
        ("train.batch_size", 0, "train.batch_size"),
        ("train.lr", "fast", "train.lr"),
        ("train.learning_rate", 0.1, "train.learning_rate: unknown key"),
        ("train.warmup_iters", 100, "train.warmup_iters: unknown key, replaced by train.warmup_epochs"),
        ("train.warmup_epochs", -0.5, "train.warmup_epochs"),
        ("data.split.train", 0.9, "must sum to 1"),
        ("model.arch", "yolo", "model.arch"),
        ("model.weights", "imagenet", "model.weights"),
        ("tune.searcher", "grid", "tune.searcher"),
        ("tune.scheduler", "pbt", "tune.scheduler"),
        ("tune.asha.grace_period", 50, "grace_period"),
        ("tune.asha.max_t", 50, "max_t"),
        ("tune.search_space", [{"param": "train.lr", "type": "gaussian", "lower": 1, "upper": 2}], "type"),
        ("tune.search_space", [{"param": "train.lr", "type": "loguniform", "lower": 0.1, "upper": 0.01}], "lower"),
        ("tune.search_space", [{"param": "train.batch_size", "type": "choice", "values": []}], "non-empty"),
        ("tune.search_space", [{"param": "model.arch", "type": "choice", "values": ["a"]}], "not a train.*"),
        ("tune.search_space", [{"param": "train.lr", "type": "qloguniform", "lower": 0.1, "upper": 1}], "needs 'q'"),
        ("evaluate.seeds", [1], "at least 2 seeds"),
        ("data.split.seed", -1, "data.split.seed: Input should be greater than or equal to 0"),
        ("tune.seed", 2**32, "tune.seed: Input should be less than 4294967296"),
        ("evaluate.seeds", [1, -2], "evaluate.seeds.1: Input should be greater than or equal to 0"),
        # Values a trial can draw that its train field rejects: every such trial would fail.
        ("tune.search_space", [{"param": "train.batch_size", "type": "choice", "values": [2, 0, 4]}],
         "train.batch_size=0 can be drawn but is not a valid value: Input should be greater than 0"),
        ("tune.search_space", [{"param": "train.lr", "type": "loguniform", "lower": 0.001, "upper": 100}],
         "train.lr=100 can be drawn but is not a valid value"),
        ("tune.search_space", [{"param": "train.optimizer", "type": "choice", "values": ["sgd", "adam"]}],
         "train.optimizer='adam' can be drawn"),
        ("tune.search_space", [{"param": "train.lr_milestones", "type": "choice", "values": [[6, 8], [4, 8]]}],
         "choice values must be numbers, strings or booleans, not [6, 8]"),
        # train.seed is 0: a run at seed 0 would repeat the trials, the selected one included
        ("evaluate.seeds", [2, 0, 1], "contains train.seed (0), the seed every tuning trial trains with"),
        ("data.source", "zip", "local_path"),
        ("model.min_size", 2000, "max_size"),
        ("model.trainable_backbone_layers", 6, "exceeds the 5 backbone stages of maskrcnn_resnet50_fpn"),
        ("record.seeds", [0], "record.seeds: at least 2 seeds"),
        ("record.seeds", [1, 1], "seeds must be distinct"),
        ("record.levels", {"train.lr": 0}, "record.levels.train.lr: Input should be greater than 0"),
        ("compare.searchers", ["grid"], "compare.searchers.0"),
        ("compare.schedulers", ["asha", "asha"], "each once"),
        ("compare.seeds", 0, "compare.seeds"),
    ],
)
def test_each_bad_value_fails_with_a_message_naming_it(raw, dotted, value, expected):
    with pytest.raises(ConfigError) as error:
        validate(_set(raw, dotted, value))
    assert expected in str(error.value)


def test_the_light_backbone_has_six_trainable_stages(raw):
    light = _set(raw, "model.arch", "maskrcnn_mobilenet_v3_large_fpn")
    assert validate(_set(light, "model.trainable_backbone_layers", 6)).model.trainable_backbone_layers == 6
    with pytest.raises(ConfigError, match="exceeds the 6 backbone stages"):
        validate(_set(light, "model.trainable_backbone_layers", 7))


def test_evaluation_seeds_only_need_to_avoid_the_search_seed(raw):
    assert validate(_set(_set(raw, "train.seed", 7), "evaluate.seeds", [0, 1])).evaluate.seeds == [0, 1]
    with pytest.raises(ConfigError, match=r"contains train.seed \(7\).*e\.g\. evaluate.seeds: \[0, 1, 2\]"):
        validate(_set(_set(raw, "train.seed", 7), "evaluate.seeds", [0, 7, 1]))
    with pytest.raises(ConfigError, match=r"e\.g\. evaluate.seeds: \[1, 2\]"):
        validate(_set(raw, "evaluate.seeds", [0, 1]))


@pytest.mark.parametrize(
    "dist",
    [
        # Trials train round(x) on an int field: 2 ... 8.
        {"param": "train.batch_size", "type": "uniform", "lower": 1.5, "upper": 8.5},
        # A continuous draw never is the bound itself, which the field excludes (momentum < 1, lr > 0).
        {"param": "train.momentum", "type": "uniform", "lower": 0.5, "upper": 1.0},
        {"param": "train.lr", "type": "uniform", "lower": 0.0, "upper": 0.02},
    ],
)
def test_a_space_whose_every_draw_is_valid_is_accepted(raw, dist):
    space = [d for d in raw["tune"]["search_space"] if d["param"] != dist["param"]] + [dist]
    assert validate(_set(raw, "tune.search_space", space)).tune.search_space[-1].param == dist["param"]


def test_evaluation_seeds_avoid_a_searched_train_seed(raw):
    space = raw["tune"]["search_space"] + [{"param": "train.seed", "type": "choice", "values": [0, 2]}]
    with pytest.raises(ConfigError, match=r"evaluate.seeds \[1, 2, 3\] holds \[2\], which tune.search_space can draw"):
        validate(_set(raw, "tune.search_space", space))
    assert validate(_set(_set(raw, "tune.search_space", space), "evaluate.seeds", [1, 3])).evaluate.seeds == [1, 3]


def test_missing_section_is_named(raw):
    broken = {k: v for k, v in raw.items() if k != "model"}
    with pytest.raises(ConfigError, match="model: missing"):
        validate(broken)


def test_yaml_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: {lr: [0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_train_overrides_are_validated(raw):
    config = validate(raw)
    tuned = with_train_overrides(config, {"train.lr": 0.02, "train.batch_size": 4})
    assert (tuned.train.lr, tuned.train.batch_size) == (0.02, 4)
    assert config.train.lr != 0.02  # the original is untouched
    with pytest.raises(ConfigError, match="train.batch_size"):
        with_train_overrides(config, {"train.batch_size": 0})
    with pytest.raises(ConfigError, match="not a train"):
        with_train_overrides(config, {"model.arch": "x"})
    # e.g. a best_params.yaml written before the warm-up was counted in epochs
    with pytest.raises(ConfigError, match="not a train.* parameter \\(replaced by train.warmup_epochs"):
        with_train_overrides(config, {"train.warmup_iters": 100})


@pytest.mark.parametrize(
    ("stage", "batch_size", "message"),
    [("train", 0, "train.batch_size"),
     # Valid for the train section, but not a point of the search space the tune stage starts from.
     ("check", 3, "the initial value train.batch_size=3 (train section) is not one of [2, 4, 8]"),
     ("train", 3, "the initial value train.batch_size=3")],
)
def test_cli_rejects_bad_params_before_any_work(tmp_path, raw, stage, batch_size, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_set(raw, "train.batch_size", batch_size)))
    result = subprocess.run(
        [sys.executable, "-m", "pedtune", stage], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no outputs, no mlruns


def test_an_unreadable_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot be read: Is a directory"):
        load_config(tmp_path)
    latin1 = tmp_path / "params.yaml"
    latin1.write_bytes("# Gr\u00f6\u00dfe\ntrain: {}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"params.yaml is not UTF-8 text \(invalid start byte at byte 4\)"):
        load_config(latin1)


def test_check_names_the_file_it_validated(capsys):
    from pedtune.cli import main

    assert main(["--params", str(REPO / "profiles" / "cpu-quick.yaml"), "check"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"pedtune check: {REPO / 'profiles' / 'cpu-quick.yaml'} is valid"
    # and how long its stages would take here, measured (tests/unit/test_estimate.py)
    assert lines[1].startswith("pedtune check: estimated on this machine: train stage ")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_device_cuda_without_a_gpu_stops_before_any_work(tmp_path, raw, stage):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_set(raw, "train.device", "cuda")))
    result = subprocess.run(
        [sys.executable, "-m", "pedtune", stage], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "train.device is 'cuda' but no CUDA device is available here" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no MLflow store, no outputs
