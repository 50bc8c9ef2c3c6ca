"""Run status (``status.json``, ``flsplit status``), progress lines inside a round, where results go."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from flsplit import cli
from flsplit.progress import ProgressMeter
from flsplit.results import flower_run_dir, resolve_results_dir
from flsplit.status import STATUS_FILE, RunStatus, latest_run, read_status, write_json_atomic
from tests.in_process_grid import run_server_app
from apps import rounds

TINY = {"dataset": "synthetic", "model": "resnet20", "strategy": "dsl", "num-server-rounds": 2, "max-batches": 2, "batch-size": 16, "eval-samples": 32}


def _running(folder: Path, heartbeat_age_s: float, interval_s: float = 30.0) -> Path:
    """A ``running`` status whose last heartbeat was ``heartbeat_age_s`` ago, as a killed ServerApp leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    status = RunStatus(folder, {"num_server_rounds": 3}, interval_s=interval_s)
    write_json_atomic(folder / STATUS_FILE, status.fields | {"heartbeat_at": time.time() - heartbeat_age_s})
    return folder


def _wait_for(condition, timeout_s: float = 10.0) -> bool:  # noqa: ANN001 - a no-argument predicate
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# status.json: the states and the exit codes


def test_a_folder_without_status_is_unknown_and_exits_4(tmp_path: Path) -> None:
    # Prepare: a run folder from before flsplit wrote status.json
    (tmp_path / "old-run").mkdir()
    (tmp_path / "old-run" / "metrics.jsonl").write_text("")
    # Execute
    found = read_status(tmp_path / "old-run")
    code = cli.main(["status", str(tmp_path / "old-run")])
    # Assert
    assert found.state == "unknown" and code == 4


def test_running_with_a_fresh_heartbeat_exits_3_and_a_stale_one_is_dead_and_exits_2(tmp_path: Path) -> None:
    # Prepare: heartbeats every 30 s; dead after 3 intervals without one
    fresh = _running(tmp_path / "fresh", heartbeat_age_s=80)
    stale = _running(tmp_path / "stale", heartbeat_age_s=100)
    # Execute / Assert
    assert read_status(fresh).state == "running" and cli.main(["status", str(fresh)]) == 3
    assert read_status(stale).state == "dead" and cli.main(["status", str(stale)]) == 2


def test_the_interval_recorded_in_the_status_decides_when_it_is_dead(tmp_path: Path) -> None:
    # Prepare: a run that beat every second (FLSPLIT_HEARTBEAT_S=1), last 4 s ago
    folder = _running(tmp_path / "run", heartbeat_age_s=4, interval_s=1.0)
    # Execute / Assert
    assert read_status(folder).state == "dead"
    assert read_status(folder, now=time.time() - 2).state == "running"


def test_completed_exits_0_and_counts_the_failed_client_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    status = RunStatus(tmp_path, {"num_server_rounds": 2}).start()
    status.update(round=2, rounds_completed=2, failed_client_rounds=1)
    # Execute
    status.complete()
    code = cli.main(["status", str(tmp_path)])
    # Assert
    fields = json.loads((tmp_path / STATUS_FILE).read_text())
    assert code == 0 and fields["state"] == "completed" and fields["failed_client_rounds"] == 1
    assert "completed (2/2 rounds, 1 failed client-rounds)" in capsys.readouterr().out


def test_failed_exits_1_with_the_errors_class_message_and_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    status = RunStatus(tmp_path, {"num_server_rounds": 5}).start()
    status.update(round=3, rounds_completed=2)
    # Execute
    status.fail(EOFError("cifar-10-python.tar.gz: the archive is truncated"), 3)
    code = cli.main(["status", str(tmp_path)])
    # Assert
    error = json.loads((tmp_path / STATUS_FILE).read_text())["error"]
    assert code == 1
    assert error == {"type": "EOFError", "message": "cifar-10-python.tar.gz: the archive is truncated", "round": 3}
    assert "failed in round 3 (2/5 rounds): EOFError: cifar-10-python.tar.gz" in capsys.readouterr().out


def test_the_heartbeat_is_a_daemon_thread_that_beats_and_never_overwrites_the_final_state(tmp_path: Path) -> None:
    # Prepare
    status = RunStatus(tmp_path, {}, interval_s=0.02).start()
    first = json.loads((tmp_path / STATUS_FILE).read_text())["heartbeat_at"]
    # Execute / Assert: it beats on its own, from a thread that does not keep the process alive
    assert _wait_for(lambda: json.loads((tmp_path / STATUS_FILE).read_text())["heartbeat_at"] > first)
    (beat,) = [t for t in threading.enumerate() if t.name == "flsplit-status-heartbeat"]
    assert beat.daemon
    status.complete()
    assert not beat.is_alive()
    assert json.loads((tmp_path / STATUS_FILE).read_text())["state"] == "completed"


def test_atomic_write_replaces_the_whole_file_or_leaves_the_old_one(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / STATUS_FILE
    write_json_atomic(path, {"state": "running"})
    # Execute: a write that fails half way (a value JSON cannot hold)
    with pytest.raises(TypeError):
        write_json_atomic(path, {"state": "completed", "bad": object()})
    # Assert: the old content is whole, and no temporary file is left behind
    assert json.loads(path.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]


def test_latest_finds_the_run_started_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: an old run without status (its folder's time), then two with one
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    os.utime(old, (1, 1))
    first = RunStatus(tmp_path / "first", {})
    first.fields["started_at"] = time.time() - 60
    first.complete()
    second = RunStatus(tmp_path / "second", {})
    second.fail(RuntimeError("boom"), None)
    (tmp_path / "not-a-run").mkdir()
    # Execute
    code = cli.main(["status", "--latest", str(tmp_path)])
    # Assert
    assert latest_run(tmp_path) == tmp_path / "second" and code == 1
    assert str(tmp_path / "second") in capsys.readouterr().out


def test_latest_without_runs_and_a_bad_command_line_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Execute / Assert: no runs is unknown (4); a malformed command line is not 2 (dead)
    assert cli.main(["status", "--latest", str(tmp_path)]) == 4
    assert "no run folders" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["status"])
    assert usage.value.code == cli.USAGE_ERROR


# progress lines: which are printed


def _lines(mode: str, total: int, seconds_per_batch: float, batches_per_upload: int = 1) -> list[int]:
    """The percentages at which a meter reports a round whose uploads come at a steady pace."""
    meter = ProgressMeter(mode, 1, total, started=0.0)
    shown = []
    for done in range(batches_per_upload, total + 1, batches_per_upload):
        point = meter.observe(done, samples=16 * done, now=done * seconds_per_batch)
        if point is not None:
            shown.append(round(100 * point.done / point.total))
    return shown


def test_on_reports_every_tenth_of_the_round_once() -> None:
    assert _lines("on", total=100, seconds_per_batch=0.01) == [10, 20, 30, 40, 50, 60, 70, 80, 90]


def test_auto_reports_only_rounds_projected_past_60_s() -> None:
    assert _lines("auto", total=100, seconds_per_batch=0.5) == []  # 50 s
    assert _lines("auto", total=100, seconds_per_batch=0.7) == [10, 20, 30, 40, 50, 60, 70, 80, 90]  # 70 s


def test_off_reports_nothing() -> None:
    assert _lines("off", total=100, seconds_per_batch=10.0) == []


def test_uploads_of_several_batches_report_each_tenth_they_pass_once() -> None:
    # DSL's family uploads many batches at once: 25 of 100 per upload
    assert _lines("on", total=100, seconds_per_batch=1.0, batches_per_upload=25) == [25, 50, 75]


def test_a_point_shows_batches_throughput_and_time_left() -> None:
    # Prepare: 300 batches at 2 s each (a 10-minute round), 16 samples a batch
    meter = ProgressMeter("auto", 4, 300, started=100.0)
    # Execute
    point = meter.observe(30, samples=480, now=160.0)
    # Assert
    assert point is not None
    assert point.line() == "round 4: 30/300 batches (10 %), 8.0 samples/s, ETA 540 s"


# where results go


def test_a_relative_results_dir_goes_under_flsplit_results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setenv("FLSPLIT_RESULTS_DIR", str(tmp_path / "base"))
    monkeypatch.chdir(tmp_path)  # never the working directory
    # Execute / Assert
    assert resolve_results_dir("sweep") == tmp_path / "base" / "sweep"
    assert resolve_results_dir("") == tmp_path / "base"
    assert resolve_results_dir(str(tmp_path / "abs")) == tmp_path / "abs"
    assert flower_run_dir(42) == tmp_path / "base" / "flower-run-42"


def test_without_the_variable_results_go_under_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.delenv("FLSPLIT_RESULTS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    # Execute / Assert
    assert resolve_results_dir("sweep") == tmp_path / "flsplit-results" / "sweep"
    assert resolve_results_dir("~/elsewhere") == tmp_path / "elsewhere"


def test_a_relative_flsplit_results_dir_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLSPLIT_RESULTS_DIR", "results")
    with pytest.raises(ValueError, match="FLSPLIT_RESULTS_DIR: 'results' is relative"):
        resolve_results_dir("sweep")


# the ServerApp, in process: status, versions, progress


@pytest.mark.usefixtures("task_identity")
def test_a_run_ends_completed_and_records_what_ran_on_both_sides(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Execute: progress on, so even this tiny round logs its tenths
    with caplog.at_level(logging.INFO, logger="flwr"):
        run_server_app(TINY | {"run-name": "good", "progress": "on"}, tmp_path)
    # Assert
    found = read_status(tmp_path / "good")
    assert found.state == "completed" and found.fields["rounds_completed"] == 2 and found.fields["failed_client_rounds"] == 0
    config = json.loads((tmp_path / "good" / "config.json").read_text())
    for side in (config, *config["client_software"]):
        assert side["python_executable"] and side["flsplit_version"] and side["flwr_version"] and side["torch_version"]
    assert len(config["client_software"]) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].split(' ', 1)[1] == f"flsplit: run folder {tmp_path / 'good'}"  # after the time stamp (flsplit.logstamp)
    assert "round 1: 2/4 batches (50 %)" in "\n".join(messages)  # 2 clients x max-batches 2


@pytest.mark.usefixtures("task_identity")
def test_a_failure_in_a_round_ends_failed_with_the_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: any exception, e.g. a corrupt cache found in round 2
    real = rounds.RoundDriver.run_round

    def breaks_in_round_2(self: rounds.RoundDriver, round_number: int) -> dict:
        if round_number == 2:
            raise OSError("cache file /c/x.npy is corrupt; delete it")
        return real(self, round_number)

    monkeypatch.setattr(rounds.RoundDriver, "run_round", breaks_in_round_2)
    # Execute
    with pytest.raises(OSError):
        run_server_app(TINY | {"run-name": "broken"}, tmp_path)
    # Assert
    found = read_status(tmp_path / "broken")
    assert found.exit_code == 1 and found.fields["rounds_completed"] == 1
    assert found.fields["error"] == {"type": "OSError", "message": "cache file /c/x.npy is corrupt; delete it", "round": 2}


@pytest.mark.usefixtures("task_identity")
def test_a_config_that_cannot_be_read_leaves_its_status_under_the_flower_run_id(tmp_path: Path, isolated_results: Path) -> None:
    # Execute: run_server_app's Context has run id 1
    with pytest.raises(ValueError):
        run_server_app(TINY | {"run-name": "bad", "lr": -1.0}, tmp_path)
    # Assert
    found = read_status(isolated_results / "flower-run-1")
    assert found.exit_code == 1 and found.fields["error"]["type"] == "ConfigError"
    assert "lr" in found.fields["error"]["message"] and not (tmp_path / "bad").exists()


@pytest.mark.usefixtures("task_identity")
def test_resume_rewrites_the_status_of_the_run_it_continues(tmp_path: Path) -> None:
    # Prepare: a 1-round run, and the status a failed later attempt left on its folder
    run_server_app(TINY | {"run-name": "long", "num-server-rounds": 1}, tmp_path)
    RunStatus(tmp_path / "long", {}).fail(RuntimeError("killed"), 2)
    # Execute: continue to round 2
    run_server_app(TINY | {"run-name": "long", "num-server-rounds": 2, "resume": True}, tmp_path)
    # Assert: this attempt's outcome, and where it continued from
    found = read_status(tmp_path / "long")
    assert found.state == "completed" and "error" not in found.fields
    assert found.fields["resumed_from_round"] == 1 and found.fields["rounds_completed"] == 2
