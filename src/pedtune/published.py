"""A published study: the git-tracked folder under ``studies/`` that README's Results are generated from.

``mlruns/`` and ``results/`` are not committed, so what a reader can check a published figure
against is this folder. What README generation reads from it:

- ``report.md``: the evaluate stage's report (``results/evaluate/report.md``) of the study;
- ``provenance.json``: ``commit``, the commit the study ran from, and ``code``, the sha256 of
  every result-affecting source file as it ran (:func:`pedtune.result_code.code_hashes`).

:func:`staleness` says how a checkout relates to it: whether the commit is in the checkout's
history, and which result-affecting files changed since (from the hashes, so a ``git archive``
export without history can still tell).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pedtune.errors import PedtuneError
from pedtune.result_code import changed_code

REPORT = "report.md"
PROVENANCE = "provenance.json"
IMPORTED_RUN_TAG = "pedtune.published_run_id"  # on an imported run: the id of the run it copies
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CommitStatus = Literal["ancestor", "elsewhere", "unknown", "no history"]


class PublishedStudyError(PedtuneError):
    """A published study's folder lacks a file or holds a malformed one."""


@dataclass(frozen=True)
class PublishedStudy:
    folder: Path
    report: str  # report.md as the study wrote it
    commit: str  # the commit the study ran from
    code: dict[str, str]  # repository path -> sha256 of each result-affecting file as it ran
    runs: dict[str, str]  # stage -> the id of its MLflow run in the study's store


def imported_run_filter(run_id: str) -> str:
    """The MLflow search filter (``mlflow ui``'s search box, ``search_runs``) that finds the import of run ``run_id``."""
    return f"tags.`{IMPORTED_RUN_TAG}` = '{run_id}'"


def imported_experiment(folder: Path) -> str:
    """The experiment ``pedtune import-runs`` puts a published study's runs in, by default."""
    return f"published-{folder.resolve().name}"


def read_published(folder: str | Path) -> PublishedStudy | None:
    """The study published in ``folder``; None if there is no such folder (nothing published yet)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        report = (folder / REPORT).read_text(encoding="utf-8")
        provenance = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise PublishedStudyError(f"{folder} is not a complete published study: {Path(error.filename).name} "
                                  "is missing") from None
    except json.JSONDecodeError as error:
        raise PublishedStudyError(f"{folder / PROVENANCE} is not valid JSON ({error})") from None
    commit, code = provenance.get("commit"), provenance.get("code")
    if not isinstance(commit, str) or not _SHA1.match(commit):
        raise PublishedStudyError(f"{folder / PROVENANCE}: 'commit' must be a full 40-digit git commit, got {commit!r}")
    if not isinstance(code, dict) or not code or not all(
        isinstance(path, str) and isinstance(digest, str) and _SHA256.match(digest) for path, digest in code.items()
    ):
        raise PublishedStudyError(f"{folder / PROVENANCE}: 'code' must map each result-affecting file to its sha256")
    runs = (provenance.get("mlflow") or {}).get("runs") or {}
    if not isinstance(runs, dict) or not all(isinstance(run, str) for run in runs.values()):
        raise PublishedStudyError(f"{folder / PROVENANCE}: 'mlflow.runs' must map each stage to its run id")
    return PublishedStudy(folder=folder, report=report, commit=commit, code=code, runs=runs)


def commit_status(commit: str, repo: Path) -> CommitStatus:
    """Where ``commit`` stands in ``repo``'s git history: an ancestor of HEAD, elsewhere in the repository,
    unknown to it, or no history to look in (not a git checkout, or no git)."""
    def git(*args: str) -> int:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True).returncode

    try:
        if git("rev-parse", "--is-inside-work-tree") != 0:
            return "no history"
    except FileNotFoundError:  # no git installed
        return "no history"
    if git("cat-file", "-e", f"{commit}^{{commit}}") != 0:
        return "unknown"
    return "ancestor" if git("merge-base", "--is-ancestor", commit, "HEAD") == 0 else "elsewhere"


def staleness(study: PublishedStudy, repo: Path, code_root: Path) -> str:
    """Two sentences: where the study's commit stands in ``repo``, and whether the result-affecting code under
    ``code_root`` (the checkout's ``src/pedtune``) is still what the study ran."""
    commit = f"`{study.commit}`"
    where = {
        "ancestor": f"The study ran from commit {commit}, in this checkout's history.",
        "elsewhere": f"The study ran from commit {commit}, which is in this repository but not in this checkout's "
                     "history.",
        "unknown": f"The study ran from commit {commit}, which is **not in this repository's history**: the code "
                   "that made these figures cannot be checked out.",
        "no history": f"The study ran from commit {commit} (no git history here to look it up).",
    }[commit_status(study.commit, repo)]
    changed = changed_code(study.code, code_root)
    if not changed:
        return f"{where} Recorded on the current code: no file that affects results changed since."
    files = ", ".join(f"`{path}`" for path in changed)
    return f"{where} **Code that affects results changed since the record:** {files}; the figures may differ here."
