"""The stages' code deps and the sweep identity come from one definition (pedtune.result_code)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pedtune.dvc_deps import PIPELINES, stale_pipelines, with_code_deps
from pedtune.result_code import (
    NOT_RESULTS,
    STAGES,
    computation_code,
    fingerprint,
    output_code,
    package_root,
    source_paths,
)

REPO = Path(__file__).resolve().parents[2]
# A comment here must leave every result alone: the ETA printer and CPU guard, the sweep's progress, the
# README renderer, console output.
PRESENTATION = ("engine/estimate.py", "tune/progress.py", "evaluate/readme.py", "console.py")


def code_deps(pipeline: str, stage: str) -> list[str]:
    """The stage's code deps as repository paths."""
    stages = yaml.safe_load((REPO / pipeline).read_text(encoding="utf-8"))["stages"]
    root = PIPELINES[pipeline][1]
    return [dep.removeprefix(root) for dep in stages[stage]["deps"] if dep.removeprefix(root).startswith("src/")]


@pytest.mark.parametrize(("pipeline", "stage"), [(p, s) for p, (stages, _) in PIPELINES.items() for s in stages])
def test_dvc_yaml_lists_exactly_the_files_the_stage_module_reaches(pipeline: str, stage: str):
    assert code_deps(pipeline, stage) == source_paths(output_code(stage))
    assert all(Path(REPO, dep).is_file() for dep in code_deps(pipeline, stage))  # files, never whole folders


def test_the_committed_pipeline_files_are_current():
    assert stale_pipelines(REPO) == []


def test_every_stage_has_a_module_and_a_pipeline_entry():
    assert sorted(STAGES) == sorted(path.stem for path in (package_root() / "stages").glob("*.py")
                                    if path.stem not in ("__init__", "inputs"))
    assert sorted(s for stages, _ in PIPELINES.values() for s in stages) == sorted(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_a_runs_computation_is_part_of_what_changes_the_outputs(stage: str):
    assert computation_code(stage) <= output_code(stage)
    assert not set(NOT_RESULTS) & output_code(stage)


def test_the_sweep_identity_leaves_out_the_driver_and_its_reports():
    trial = computation_code("tune")
    assert {"pedtune.engine.train", "pedtune.tune.trainable", "pedtune.tune.space", "pedtune.model.factory",
            "pedtune.data.dataset", "pedtune.config.schema"} <= trial
    assert not {"pedtune.stages.tune", "pedtune.tune.outputs", "pedtune.tune.results",
                "pedtune.tracking.sweep", "pedtune.tune.identity"} & trial


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "elsewhere" / "pedtune"
    shutil.copytree(package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _stage_files(root: Path, stages: tuple[str, ...]) -> dict[str, list[str]]:
    return {stage: source_paths(output_code(stage, root), root) for stage in stages}


def test_a_comment_in_presentation_code_changes_no_deps_and_no_sweep(package_copy: Path):
    stages = ("train", "tune", "evaluate", "record")
    before = fingerprint(computation_code("tune", package_copy), package_copy), _stage_files(package_copy, stages)
    for name in PRESENTATION:
        with (package_copy / name).open("a", encoding="utf-8") as file:
            file.write("\n# a comment\n")
        assert not any(f"src/pedtune/{name}" in files for files in before[1].values())
    after = fingerprint(computation_code("tune", package_copy), package_copy), _stage_files(package_copy, stages)
    assert after == before


def test_the_sweep_id_follows_trial_code_not_where_the_checkout_lies(package_copy: Path):
    here = fingerprint(computation_code("tune"))
    assert fingerprint(computation_code("tune", package_copy), package_copy) == here  # another folder
    with (package_copy / "stages" / "tune.py").open("a", encoding="utf-8") as file:
        file.write("\n# a fix to the driver\n")
    assert fingerprint(computation_code("tune", package_copy), package_copy) == here  # still resumes
    with (package_copy / "engine" / "train.py").open("a", encoding="utf-8") as file:
        file.write("\n# a change to fit\n")
    assert fingerprint(computation_code("tune", package_copy), package_copy) != here


def test_generated_deps_replace_only_the_code_entries():
    text = "stages:\n  train:\n    cmd: x\n    deps:\n      - data/a\n      - src/pedtune/old.py  # note\n" \
           "    outs:\n      - b\n"
    new = with_code_deps(text, "train", ["src/pedtune/new.py"])
    deps = yaml.safe_load(new)["stages"]["train"]["deps"]
    assert deps == ["data/a", "src/pedtune/new.py"] and yaml.safe_load(new)["stages"]["train"]["outs"] == ["b"]
    assert with_code_deps(new, "train", ["src/pedtune/new.py"]) == new
