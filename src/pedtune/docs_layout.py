"""Write docs/development.md's layout section from the tree and each module's docstring (``pedtune docs-layout``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pedtune.io import write_text

START, END = "<!-- layout:start -->", "<!-- layout:end -->"
WIDTH = 118
# The folders outside src/pedtune, as a newcomer needs them explained. A new folder needs a line here.
FOLDERS = {
    "bench": "the performance harness: scripts that time the code (bench/README.md); their results in bench/results",
    "docs": "one page per concern; params.md, performance.md's table and this layout are generated",
    "profiles": "whole alternative params files (cpu-quick, smoke), run with `pedtune profile`",
    "recordings": "recorded tables of the tuning problem and their replayed verdicts; recordings/dvc.yaml runs them",
    "tests": "pytest; each folder below tests one part, `slow` marks the end-to-end runs",
}
TEST_FOLDERS = {
    "unit": "config, model, engine, console, small modules",
    "data": "fetching, validation, synthetic data",
    "tune": "the tune stage and its machinery (real Ray, MLflow)",
    "evaluate": "the evaluate stage, its statistics and report",
    "predict": "pedtune predict and the registered model (loaded without pedtune)",
    "replay": "record and compare",
    "cluster": "a loopback Ray cluster",
    "faults": "failures a user meets: an unreachable server, a store opened twice",
    "bench": "each benchmark once at a tiny size",
    "e2e": "the README's commands and the whole DVC pipeline (slow)",
    "cuda": "device code; skipped without CUDA",
}


def summary(path: Path) -> str:
    """The first sentence of a module's docstring (empty without one)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    first = re.sub(r":\w+:`", "`", first.replace("``", "`"))
    sentence = re.match(r"(.+?[.?!:])(\s+[A-Z]|$)", first)
    return sentence.group(1) if sentence else first


def _entry(indent: int, name: str, text: str, column: int) -> list[str]:
    """``name`` then ``text`` wrapped at WIDTH, continuation lines under the text's column."""
    lines, line = [], f"{' ' * indent}{name}".ljust(column)
    for word in text.split():
        if len(line) + 1 + len(word) > WIDTH and line.strip() != name:
            lines.append(line.rstrip())
            line = " " * column
        line += word + " "
    return [*lines, line.rstrip()]


def layout(repo: Path) -> str:
    src = repo / "src" / "pedtune"
    out = ["src/pedtune/"]
    for path in sorted(src.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        if path.suffix == ".py" and path.name != "__init__.py":
            out += _entry(2, path.name, summary(path), 18)
    for package in sorted(p for p in src.iterdir() if (p / "__init__.py").is_file()):
        out += _entry(2, f"{package.name}/", summary(package / "__init__.py"), 18)
        for module in sorted(package.glob("*.py")):
            if module.name != "__init__.py":
                out += _entry(4, module.name, summary(module), 20)
    for folder, text in FOLDERS.items():
        out += _entry(0, f"{folder}/", text, 18)
    for folder in sorted(p.name for p in (repo / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"):
        out += _entry(2, f"{folder}/", TEST_FOLDERS[folder], 18)
    return "\n".join(out)


def with_layout(text: str, repo: Path) -> str:
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n```\n{layout(repo)}\n```\n{END}{after}"


def write_layout(page: Path, repo: Path = Path(".")) -> bool:
    """Rewrite the layout section of ``page``; whether it changed."""
    text = page.read_text(encoding="utf-8")
    new = with_layout(text, repo)
    if new != text:
        write_text(page, new)
    return new != text
