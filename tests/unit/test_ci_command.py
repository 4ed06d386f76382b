"""CI runs exactly the test command README.md gives, and that command reports coverage and the slowest tests."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)
    (command,) = [block.strip() for block in blocks if block.startswith("python -m pytest")]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line
          and not line.lstrip().startswith("#")]
    assert ci == [command]
    assert "--cov=pedtune" in command and "--durations=15" in command and "-n 2" in command
    pinned = (REPO / "requirements.txt").read_text()
    assert re.search(r"^pytest-cov==\S+", pinned, re.M)
