"""`pedtune profile NAME`: a profile as the -S options of one `dvc exp run`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from pedtune.cli import main
from pedtune.config import ConfigError, validate
from pedtune.config.profile import FAILED_OPTION, differences, override_value, profile_options

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cpu-quick", "smoke"])
def test_dvc_applies_the_options_to_params_yaml_as_the_profile(tmp_path: Path, name: str):
    options = profile_options(name, REPO / "params.yaml", REPO / "profiles")
    assert options[::2] == ["-S"] * (len(options) // 2)
    assert not any(" " in option for option in options)  # one shell word each
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_overrides(params, options[1::2])  # what `dvc exp run -S` does with them
    assert yaml.safe_load(params.read_text()) == yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())


def test_values_survive_dvc_s_override_grammar(tmp_path: Path):
    values = {
        "data": {"local_path": "/data/Penn-Fudan_Ped", "url": "", "size_bytes": None, "cache": False},
        "mlflow": {"tracking_uri": "http://127.0.0.1:5000", "experiment": "null"},
        "train": {"lr": 0.0001},
        "tune": {"search_space": [{"param": "train.lr", "type": "loguniform", "lower": 1e-05, "upper": 0.1},
                                  {"param": "train.optimizer", "type": "choice", "values": ["sgd", "adamw"]}]},
    }
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_overrides(params, [f"{key}={override_value(value)}" for key, value in
                             differences(yaml.safe_load(params.read_text()), values).items()])
    got = yaml.safe_load(params.read_text())
    assert got["data"]["local_path"] == "/data/Penn-Fudan_Ped" and got["data"]["url"] == ""
    assert got["data"]["size_bytes"] is None and got["data"]["cache"] is False
    assert got["mlflow"] == {**got["mlflow"], **values["mlflow"]}
    # DVC writes 1e-05 as YAML 1.2 does, which PyYAML reads as a string: the schema reads it as the float.
    space = [dist.model_dump(exclude_none=True) for dist in validate(got).tune.search_space]
    assert space == values["tune"]["search_space"]


def test_a_value_with_a_space_is_refused():
    with pytest.raises(ConfigError, match="spaces"):
        override_value("/my data/PennFudanPed")


def test_cli_prints_options_and_names_the_profiles_on_a_typo(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["profile", "smoke"]) == 0
    assert "-S data.source=synthetic" in capsys.readouterr().out
    assert main(["profile", "cpu_quick"]) == 2
    printed = capsys.readouterr()
    assert "no profile 'cpu_quick' (profiles/cpu_quick.yaml not found; profiles: cpu-quick, smoke)" in printed.err
    # What `dvc exp run -n x $(pedtune profile cpu_quick)` receives: an option it refuses, not nothing
    # (which would run params.yaml's defaults as the experiment).
    assert printed.out.split() == [FAILED_OPTION]
    done = subprocess.run(["dvc", "exp", "run", "-n", "x", *printed.out.split()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and FAILED_OPTION in done.stderr
