"""bench.tune_overhead's clock for a worker's start, against a process started at a known time."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_process_started_is_when_the_process_was_spawned() -> None:
    from bench.tune_overhead import process_started

    # The function alone, in a fresh interpreter: importing its module there would take seconds.
    program = "import os, time\nfrom pathlib import Path\n" + inspect.getsource(process_started)
    program += "print(process_started(), time.time())\n"
    spawned = time.time()
    started, printed = map(float, subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                                 check=True).stdout.split())
    # A clock tick (10 ms) of resolution; psutil's create_time was up to a second early here.
    assert spawned - 0.03 <= started <= printed
