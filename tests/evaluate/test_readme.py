from __future__ import annotations

from pathlib import Path

import pytest

from pedtune.evaluate.readme import END_MARKER, START_MARKER, ReadmeError, update_readme

README = f"""# pedtune

## Results

{START_MARKER}
old numbers
{END_MARKER}

## Licence
"""


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "results" / "evaluate" / "report.md"
    path.parent.mkdir(parents=True)
    path.write_text("| metric | value |\n|---|---|\n| bbox mAP | 0.5 |\n", encoding="utf-8")
    return path


def test_text_between_the_markers_is_replaced_by_the_report(tmp_path: Path, report: Path):
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    update_readme(readme, report)
    text = readme.read_text(encoding="utf-8")
    assert "old numbers" not in text
    assert f"{START_MARKER}\n| metric | value |\n|---|---|\n| bbox mAP | 0.5 |\n{END_MARKER}" in text
    assert text.startswith("# pedtune\n\n## Results\n\n") and text.endswith(f"{END_MARKER}\n\n## Licence\n")
    update_readme(readme, report)
    assert readme.read_text(encoding="utf-8") == text  # idempotent


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# pedtune\n\nno markers\n", "exactly once"),
        (f"{START_MARKER}\n{START_MARKER}\n{END_MARKER}\n", "exactly once"),
        (f"{END_MARKER}\nx\n{START_MARKER}\n", "comes before"),
    ],
)
def test_malformed_markers_fail_and_leave_the_readme_unchanged(tmp_path: Path, report: Path, content, message):
    readme = tmp_path / "README.md"
    readme.write_text(content, encoding="utf-8")
    with pytest.raises(ReadmeError, match=message):
        update_readme(readme, report)
    assert readme.read_text(encoding="utf-8") == content
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_missing_report_fails_with_the_stage_to_run(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    with pytest.raises(ReadmeError, match="dvc repro evaluate"):
        update_readme(readme, tmp_path / "missing.md")
    assert readme.read_text(encoding="utf-8") == README


def test_cli_command_rewrites_the_readme_from_the_default_report(tmp_path: Path, report: Path, monkeypatch):
    from pedtune.cli import main

    monkeypatch.chdir(tmp_path)
    Path("README.md").write_text(README, encoding="utf-8")
    assert main(["readme-results"]) == 0
    assert "| bbox mAP | 0.5 |" in Path("README.md").read_text(encoding="utf-8")
    Path("README.md").write_text("no markers\n", encoding="utf-8")
    assert main(["readme-results"]) == 1


def test_cli_command_takes_another_study_folders_report(tmp_path: Path, report: Path, monkeypatch):
    from pedtune.cli import main

    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    Path("README.md").write_text(README, encoding="utf-8")
    assert main(["readme-results", "--report", str(report)]) == 0
    assert "| bbox mAP | 0.5 |" in Path("README.md").read_text(encoding="utf-8")
