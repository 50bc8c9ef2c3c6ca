"""``status.json`` through ``flwr run``: each way a run ends, read back with ``flsplit status``.

``flwr run --stream`` exits 0 whether the ServerApp completes or fails; the status is what a
script reads. One SuperLink for the module, with results under a temp ``FLSPLIT_RESULTS_DIR``
and a 1 s heartbeat so that a killed ServerApp reads as dead within seconds.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flsplit import cli
from flsplit.launcher import PROJECT, SuperLink, _descendants, _signal_all, run_config_text
from flsplit.status import read_status

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, flwr run)

TINY = {"dataset": "synthetic", "num-server-rounds": 1, "max-batches": 2, "batch-size": 16, "eval-samples": 32}


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLink]:
    results = tmp_path_factory.mktemp("status-results")
    env = {"FLSPLIT_RESULTS_DIR": str(results), "FLSPLIT_HEARTBEAT_S": "1"}
    superlink = SuperLink(tmp_path_factory.mktemp("status-home"), env=env)
    try:
        yield superlink
    finally:
        superlink.stop()


def _run(link: SuperLink, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    done = link.run(run_config_text(config), timeout_s=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # flwr run's 0, whatever happened
    return done


def _failed_with(run_dir: Path, *words: str) -> dict:
    """Assert the run folder's status is ``failed`` and its error names ``words``; return the error."""
    found = read_status(run_dir)
    assert found.state == "failed", found.fields
    assert cli.main(["status", str(run_dir)]) == 1
    error = found.fields["error"]
    text = f"{error['type']}: {error['message']}"
    assert all(word in text for word in words), text
    return error


def test_a_good_run_ends_completed_and_the_command_exits_0(link: SuperLink, tmp_path: Path) -> None:
    # Execute
    done = _run(link, TINY | {"results-dir": str(tmp_path), "run-name": "good"})
    # Assert: the exit code a shell sees, from the console command's module
    status = subprocess.run([sys.executable, "-m", "flsplit.cli", "status", str(tmp_path / "good")], cwd=PROJECT, capture_output=True, text=True, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "completed (1/1 rounds)" in status.stdout
    assert f"flsplit: run folder {tmp_path / 'good'}" in done.stdout + done.stderr


def test_a_bad_config_fails_under_the_flower_run_id(link: SuperLink) -> None:
    # Execute
    done = _run(link, {"strategy": "magic", "lr": -1.0})
    # Assert: the status is in the documented place for a config that cannot be read
    run_id = re.search(r"Successfully started run (\d+)", done.stdout + done.stderr)
    assert run_id, done.stdout[-3000:]
    run_dir = Path(link.env["FLSPLIT_RESULTS_DIR"]) / f"flower-run-{run_id.group(1)}"
    error = _failed_with(run_dir, "ConfigError", "strategy", "magic", "lr")
    assert error["round"] is None


def test_a_missing_data_dir_fails_naming_the_key(link: SuperLink, tmp_path: Path) -> None:
    # Execute
    _run(link, TINY | {"dataset": "imagefolder", "data-dir": str(tmp_path / "nowhere"), "results-dir": str(tmp_path), "run-name": "no-data"})
    # Assert
    _failed_with(tmp_path / "no-data", "data-dir", str(tmp_path / "nowhere"))


def test_a_truncated_archive_fails(link: SuperLink, tmp_path: Path, image_folder_tar: Path) -> None:
    # Prepare: the ImageFolder archive cut in half
    data = tmp_path / "data"
    data.mkdir()
    whole = image_folder_tar.read_bytes()
    (data / image_folder_tar.name).write_bytes(whole[: len(whole) // 2])
    # Execute
    _run(link, TINY | {"dataset": "imagefolder", "data-dir": str(data), "results-dir": str(tmp_path), "run-name": "truncated"})
    # Assert: failed, with whatever the data loader raised (EOFError today; the archive's name once it says so)
    error = _failed_with(tmp_path / "truncated")
    assert error["message"] and error["round"] is None


def test_a_killed_server_app_reads_as_dead(link: SuperLink, tmp_path: Path) -> None:
    # Prepare: a long run, until its first round is done
    run_dir = tmp_path / "killed"
    process = link.launch(run_config_text(TINY | {"num-server-rounds": 500, "results-dir": str(tmp_path), "run-name": "killed"}))
    try:
        started = _wait(lambda: read_status(run_dir).fields.get("rounds_completed", 0) >= 1, timeout_s=240)
        assert started, read_status(run_dir).fields
        server_app = int(read_status(run_dir).fields["pid"])
        # Execute: SIGKILL the ServerApp's process and everything it started, as a crash would
        _signal_all([server_app, *_descendants(server_app)], 9)
        # Assert: 'running' until the heartbeat is 3 intervals (3 s) old, then dead
        assert _wait(lambda: read_status(run_dir).state == "dead", timeout_s=30)
        assert cli.main(["status", str(run_dir)]) == 2
    finally:
        process.kill()
        process.communicate()


def _wait(condition, timeout_s: float) -> bool:  # noqa: ANN001 - a no-argument predicate
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()
