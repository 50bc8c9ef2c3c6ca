"""The launcher's process control: what a started process inherits from it."""

import os
import sys
import time
from pathlib import Path

from flsplit.launcher import _Process

#: prints its nice, then waits to be stopped
REPORT_NICE = "import os, time; print(os.nice(0), flush=True); time.sleep(60)"


def _started(tmp_path: Path, nice: int) -> tuple[_Process, Path]:
    process = _Process()
    process._start([sys.executable, "-c", REPORT_NICE], dict(os.environ), tmp_path, tmp_path / "out.log", nice)
    return process, tmp_path / "out.log"


def _reported_nice(log: Path) -> int:
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(log.read_text().split()[0])


def test_a_niced_process_runs_below_the_launcher_in_its_own_session_too(tmp_path: Path) -> None:
    # Prepare: where the launcher itself stands
    own = os.nice(0)
    # Execute
    process, log = _started(tmp_path, 7)
    try:
        autogroup = Path(f"/proc/{process.process.pid}/autogroup")
        group = autogroup.read_text() if autogroup.exists() else ""
        nice = _reported_nice(log)
    finally:
        process.stop()
    # Assert: process nice raised by 7, and (under autogroup scheduling) its session's group too
    assert nice == min(own + 7, 19)
    if group:
        assert group.rstrip().endswith("nice 7")


def test_an_unniced_process_keeps_the_launchers_priority(tmp_path: Path) -> None:
    process, log = _started(tmp_path, 0)
    try:
        assert _reported_nice(log) == os.nice(0)
    finally:
        process.stop()
