"""Write each DVC stage's code deps from :func:`pedtune.result_code.output_code` (``pedtune dvc-deps``).

Only the ``src/pedtune/...`` entries of a stage's ``deps:`` are generated; its data deps and
everything else in the file stay as written.
"""

from __future__ import annotations

import re
from pathlib import Path

from pedtune.io import write_text
from pedtune.result_code import output_code, source_paths

# Each pipeline file, the stages it holds and where the repository root is from it (recordings/ is a DVC
# project of its own, outside the study's).
PIPELINES = {"dvc.yaml": (("fetch", "weights", "split", "train", "tune", "evaluate"), ""),
             "recordings/dvc.yaml": (("record", "compare"), "../")}
CODE_PREFIX = "src/pedtune/"
MARKER = "# code: written by `pedtune dvc-deps` from the stage module's imports"
ITEM = "      - "


class StageNotFound(ValueError):
    """A pipeline file lacks a stage (or its deps) that pedtune has a module for."""


def with_code_deps(text: str, stage: str, code: list[str], root: str = "") -> str:
    """``text`` (a dvc.yaml) with ``stage``'s code deps replaced by ``code`` (paths from the repository root,
    ``root`` the way there from the file), after its other deps."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line == f"  {stage}:"), None)
    if start is None:
        raise StageNotFound(f"no stage {stage!r} in the pipeline file")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}\S", lines[i])), len(lines))
    deps = next((i for i in range(start + 1, end) if lines[i] == "    deps:"), None)
    if deps is None:
        raise StageNotFound(f"stage {stage!r} has no deps: list")
    stop = next((i for i in range(deps + 1, end) if lines[i].strip() and not lines[i].startswith("      ")), end)
    kept = [line for line in lines[deps + 1 : stop]
            if line.strip() and not line.startswith(ITEM + root + CODE_PREFIX) and line.strip() != MARKER]
    generated = [f"      {MARKER}", *(ITEM + root + path for path in code)]
    trailing = [line for line in lines[deps + 1 : stop] if not line.strip()]
    return "\n".join([*lines[: deps + 1], *kept, *generated, *trailing, *lines[stop:]])


def rendered(repo: Path, pipeline: str) -> str:
    text = (repo / pipeline).read_text(encoding="utf-8")
    stages, root = PIPELINES[pipeline]
    for stage in stages:
        text = with_code_deps(text, stage, source_paths(output_code(stage)), root)
    return text


def stale_pipelines(repo: Path = Path(".")) -> list[str]:
    """The pipeline files whose code deps differ from the derived ones."""
    return [name for name in PIPELINES if rendered(repo, name) != (repo / name).read_text(encoding="utf-8")]


def write_dvc_deps(repo: Path = Path(".")) -> list[str]:
    """Rewrite the code deps of every pipeline file; returns the files that changed."""
    changed = stale_pipelines(repo)
    for name in changed:
        write_text(repo / name, rendered(repo, name))
    return changed
