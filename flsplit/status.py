"""A run's outcome on disk: ``status.json``, which a script reads instead of ``flwr run``'s exit code.

``flwr run --stream`` exits 0 even when the ServerApp fails, so the ServerApp itself records
how the run stands: ``running`` (with a heartbeat every ``FLSPLIT_HEARTBEAT_S`` seconds, 30 by
default), ``completed`` or ``failed`` (the error's class, message and round). A ServerApp that
is killed cannot write anything, so a ``running`` status whose heartbeat is older than
``STALE_BEATS`` intervals reads as ``dead``. Every write replaces the file atomically, so a
reader never sees half of one. The format and the exit codes are in docs/outputs.md.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
#: Seconds between heartbeats; the environment variable shortens it (tests).
HEARTBEAT_ENV = "FLSPLIT_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 30.0
#: A ``running`` status whose heartbeat is older than this many intervals is ``dead``.
STALE_BEATS = 3
#: ``flsplit status`` exit codes by state.
EXIT_CODES = {"completed": 0, "failed": 1, "dead": 2, "running": 3, "unknown": 4}


def heartbeat_interval() -> float:
    """The heartbeat interval in seconds: ``$FLSPLIT_HEARTBEAT_S``, or 30."""
    raw = os.environ.get(HEARTBEAT_ENV, "")
    try:
        interval = float(raw) if raw else DEFAULT_HEARTBEAT_S
    except ValueError:
        raise ValueError(f"{HEARTBEAT_ENV}: {raw!r} is not a number of seconds; unset it for {DEFAULT_HEARTBEAT_S:g}") from None
    if interval <= 0:
        raise ValueError(f"{HEARTBEAT_ENV}: {raw!r} must be a positive number of seconds; unset it for {DEFAULT_HEARTBEAT_S:g}")
    return interval


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStatus:
    """The ServerApp's side: keeps ``status.json`` current from start to end.

    Every change is written at once; a daemon thread rewrites the file with a fresh heartbeat
    in between. It never keeps the process alive, and it takes the same lock as the changes, so
    a heartbeat cannot overwrite the final state.
    """

    def __init__(self, folder: Path, fields: dict[str, Any], interval_s: float | None = None) -> None:
        self.folder = folder
        self.interval_s = heartbeat_interval() if interval_s is None else interval_s
        now = time.time()
        self.fields: dict[str, Any] = {
            "state": "running",
            "started_at": now,
            "heartbeat_at": now,
            "heartbeat_interval_s": self.interval_s,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "round": None,
            "rounds_completed": 0,
            "failed_client_rounds": 0,
        } | fields
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def path(self) -> Path:
        """Where the status is written."""
        return self.folder / STATUS_FILE

    def start(self) -> RunStatus:
        """Write the ``running`` status and start the heartbeat."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write()
        self._beat = threading.Thread(target=self._beat_until_stopped, name="flsplit-status-heartbeat", daemon=True)
        self._beat.start()
        return self

    def update(self, **fields: Any) -> None:
        """Record how far the run is (``round``, ``rounds_completed``, ``failed_client_rounds``, ...) now."""
        with self._lock:
            self.fields |= fields
        self._write()

    def complete(self) -> None:
        """The run ended normally."""
        self._finish({"state": "completed"})

    def fail(self, error: BaseException, round_number: int | None) -> None:
        """The run stopped on ``error`` while in ``round_number`` (``None``: before round 1)."""
        message = str(error) or repr(error)
        self._finish({"state": "failed", "error": {"type": type(error).__name__, "message": message, "round": round_number}})

    def _finish(self, fields: dict[str, Any]) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with self._lock:
            self.fields |= fields | {"finished_at": time.time()}
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write()

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._write()
            except OSError:
                pass  # a full or vanished disk: the next beat tries again, the run goes on

    def _write(self) -> None:
        with self._lock:
            self.fields["heartbeat_at"] = time.time()
            write_json_atomic(self.path, self.fields)


@dataclass(frozen=True)
class StatusReport:
    """What a run folder says about its run, as ``flsplit status`` reports it."""

    state: str  # completed, failed, dead, running or unknown
    fields: dict[str, Any]

    @property
    def exit_code(self) -> int:
        """``flsplit status``'s exit code: 0 completed, 1 failed, 2 dead, 3 running, 4 unknown."""
        return EXIT_CODES[self.state]

    def describe(self) -> str:
        """One line for a person: the state and what explains it."""
        rounds = f"{self.fields.get('rounds_completed', '?')}/{self.fields.get('num_server_rounds', '?')} rounds"
        if self.state == "failed":
            error = self.fields.get("error") or {}
            where = f"round {error['round']}" if error.get("round") else "start-up"
            return f"failed in {where} ({rounds}): {error.get('type')}: {error.get('message')}"
        if self.state == "dead":
            age = time.time() - float(self.fields["heartbeat_at"])
            return f"dead: status says running, but its last heartbeat was {age:.0f} s ago ({rounds}; pid {self.fields.get('pid')} on {self.fields.get('host')})"
        if self.state == "unknown":
            return "unknown: no status.json (a run from before flsplit wrote one, or not a run folder)"
        failed = self.fields.get("failed_client_rounds", 0)
        return f"{self.state} ({rounds}{f', {failed} failed client-rounds' if failed else ''})"


def read_status(run_dir: Path, now: float | None = None) -> StatusReport:
    """The state of the run in ``run_dir``; ``dead`` for a ``running`` status with a stale heartbeat."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return StatusReport("unknown", {})
    fields = json.loads(path.read_text(encoding="utf-8"))
    state = str(fields.get("state", "unknown"))
    if state == "running":
        age = (time.time() if now is None else now) - float(fields["heartbeat_at"])
        if age > STALE_BEATS * float(fields["heartbeat_interval_s"]):
            state = "dead"
    return StatusReport(state if state in EXIT_CODES else "unknown", fields)


def latest_run(results_dir: Path) -> Path:
    """The run folder in ``results_dir`` started last (by ``started_at``; the folder's time without one).

    Raises
    ------
    FileNotFoundError
        If ``results_dir`` holds no run folder.
    """
    candidates = [p for p in Path(results_dir).iterdir() if p.is_dir() and _is_run(p)] if Path(results_dir).is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"{results_dir}: no run folders (with status.json, config.json or metrics.jsonl)")
    return max(candidates, key=_started_at)


def _is_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (STATUS_FILE, "config.json", "metrics.jsonl"))


def _started_at(folder: Path) -> float:
    try:
        return float(json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))["started_at"])
    except (OSError, ValueError, KeyError):
        return folder.stat().st_mtime
