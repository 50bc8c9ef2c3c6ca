"""The launcher's process control: what a started process inherits from it."""

import os
import sys
from pathlib import Path

from flsplit.launcher import _Process

REPORT = "import os, pathlib; a = pathlib.Path('/proc/self/autogroup'); print(os.nice(0), a.read_text() if a.exists() else '')"


def _started(tmp_path: Path, nice: int) -> str:
    process = _Process()
    process._start([sys.executable, "-c", REPORT], dict(os.environ), tmp_path, tmp_path / "out.log", nice)
    process.process.wait(timeout=30)
    process._log_handle.close()  # type: ignore[attr-defined]
    return (tmp_path / "out.log").read_text()


def test_a_niced_process_runs_below_the_launcher_in_its_own_session_too(tmp_path: Path) -> None:
    # Prepare: where the launcher itself stands
    own = os.nice(0)
    # Execute
    report = _started(tmp_path, 7)
    # Assert: process nice raised by 7, and (under autogroup scheduling) its session's group too
    assert report.split()[0] == str(min(own + 7, 19))
    if Path("/proc/self/autogroup").exists():
        assert report.rstrip().endswith("nice 7")


def test_an_unniced_process_keeps_the_launchers_priority(tmp_path: Path) -> None:
    assert _started(tmp_path, 0).split()[0] == str(os.nice(0))
