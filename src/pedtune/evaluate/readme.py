"""``pedtune readme-results``: README.md's Results section, regenerated from the evaluate report."""

from __future__ import annotations

from pathlib import Path

from pedtune.errors import PedtuneError
from pedtune.evaluate.files import REPORT
from pedtune.io import write_text

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"


class ReadmeError(PedtuneError):
    """The README lacks well-formed result markers, or there is no report to put between them."""


def replace_results(text: str, results: str, source: str = "README") -> str:
    """``text`` with everything between the two markers (kept) replaced by ``results``."""
    for marker in (START_MARKER, END_MARKER):
        count = text.count(marker)
        if count != 1:
            raise ReadmeError(f"{source} must contain the line {marker} exactly once (found {count})")
    start = text.index(START_MARKER) + len(START_MARKER)
    end = text.index(END_MARKER)
    if end < start:
        raise ReadmeError(f"{source}: {END_MARKER} comes before {START_MARKER}")
    return f"{text[:start]}\n{results.strip()}\n{text[end:]}"


def update_readme(readme_path: str | Path, report_path: str | Path = REPORT) -> None:
    """Rewrite the Results section in place; the file is left untouched on any error."""
    readme_path, report_path = Path(readme_path), Path(report_path)
    try:
        report = report_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReadmeError(f"{report_path} not found: run the evaluate stage first (dvc repro evaluate)") from None
    try:
        text = readme_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReadmeError(f"{readme_path} not found") from None
    write_text(readme_path, replace_results(text, report, source=str(readme_path)))
