"""docs/development.md's layout is generated from the tree and the modules' docstrings, and kept current."""

from __future__ import annotations

from pathlib import Path

from pedtune.docs_layout import FOLDERS, layout, with_layout

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_layout_is_current():
    page = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    assert with_layout(page, REPO) == page, "docs/development.md's layout is stale: run `pedtune docs-layout`"


def test_the_layout_names_every_module_and_folder():
    text = layout(REPO)
    modules = [path for path in (REPO / "src" / "pedtune").rglob("*.py") if path.name != "__init__.py"
               and "__pycache__" not in path.parts]
    assert all(f" {path.name}" in text for path in modules)
    assert all(f"{folder}/" in text for folder in FOLDERS)
