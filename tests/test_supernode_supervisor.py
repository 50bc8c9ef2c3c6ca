"""``python -m apps.supernode``: a SuperNode and its warm SuperExec live and end together.

Stand-in programs play the two processes here (a socket on the Runtime API port, Flower's own
output when the SuperLink forgets the node); ``tests/test_deploy_guide.py`` runs the real ones.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from apps.supernode import Supervisor, classify_exit, split_runtime_args

#: What flwr 1.42's SuperNode printed when its SuperLink restarted without --database (abridged).
FORGOTTEN_OUTPUT = """\
\x1b[93mWARNING \x1b[0m:   Connection attempt failed, retrying in 3.58 seconds
Exception in thread Thread-3 (_run):
Traceback (most recent call last):
  File "/usr/lib/python3.11/threading.py", line 1045, in _bootstrap_inner
\x1b[92mINFO \x1b[0m:      SuperNode terminated gracefully.
    self.run()
  File "/site-packages/flwr/supernode/fleet_http_connection.py", line 121, in send_node_heartbeat
    response = client.SendNodeHeartbeat(
httpx.HTTPStatusError: Client error '401 Unauthorized' for url 'https://127.0.0.1:40585/v1/fleet/send-node-heartbeat'
For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401
"""
NOT_REGISTERED_OUTPUT = """\
\x1b[91mERROR \x1b[0m:     Exit Code: 305
The SuperNode could not establish a connection to the SuperLink.
Failed to initialize the connection to the SuperLink.
[code: 3002] Failed to activate SuperNode.
"""

FAKE_SUPERNODE = """
import os, pathlib, socket, sys, time
args = sys.argv[1:]
port, state = int(args[args.index("--port") + 1]), pathlib.Path(args[args.index("--state") + 1])
starts = int(state.read_text()) + 1 if state.exists() else 1
state.write_text(str(starts))
behaviour = args[args.index("--behaviour") + 1].split(",")[min(starts, 2) - 1]
server = socket.create_server(("127.0.0.1", port))
(state.parent / "supernode.pid").write_text(str(os.getpid()))
print("SuperNode up", flush=True)
while not (state.parent / "superexec.pid").exists():  # its SuperExec has started
    time.sleep(0.05)
if behaviour == "stay":
    time.sleep(600)
GRACEFUL = "\\x1b[92mINFO \\x1b[0m:      SuperNode terminated gracefully.\\n"
sys.stdout.write({"forget": FORGOTTEN, "graceful": GRACEFUL, "refused": REFUSED, "crash": "Killed\\n"}[behaviour])
sys.exit({"forget": 0, "graceful": 0, "refused": 1, "crash": 137}[behaviour])
"""
FAKE_SUPEREXEC = "import os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(float(sys.argv[2])); sys.exit(3)"


def _supervisor(tmp_path: Path, behaviour: str, superexec_lives_s: float = 600) -> tuple[Supervisor, io.StringIO]:
    node = tmp_path / "fake_supernode.py"
    node.write_text(f"FORGOTTEN = {FORGOTTEN_OUTPUT!r}\nREFUSED = {NOT_REGISTERED_OUTPUT!r}\n" + FAKE_SUPERNODE)
    out = io.StringIO()
    argv = ["--superlink", "127.0.0.1:9", "--state", str(tmp_path / "starts"), "--behaviour", behaviour]
    executor = [sys.executable, "-c", FAKE_SUPEREXEC, str(tmp_path / "superexec.pid"), str(superexec_lives_s)]
    return Supervisor(argv, out, node=[sys.executable, str(node)], executor=executor), out


def _gone(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return True
    return False


def test_a_dead_supernode_takes_its_superexec_with_it(tmp_path: Path) -> None:
    # Prepare
    supervisor, out = _supervisor(tmp_path, "crash")
    # Execute
    status = supervisor.run()
    # Assert: the SuperExec was stopped (not orphaned) and the exit says what happened
    assert status == 137
    assert _gone(tmp_path / "superexec.pid")
    assert "the SuperNode exited with code 137" in out.getvalue()


def test_a_dead_superexec_takes_its_supernode_with_it(tmp_path: Path) -> None:
    # Prepare: the SuperExec ends with code 3 while its SuperNode would go on
    supervisor, out = _supervisor(tmp_path, "stay", superexec_lives_s=0.5)
    # Execute
    status = supervisor.run()
    # Assert
    assert status == 3 and _gone(tmp_path / "supernode.pid")
    assert "the warm SuperExec exited with code 3" in out.getvalue()


def test_a_supernode_the_superlink_forgot_is_restarted_once_and_a_refused_key_is_named(tmp_path: Path) -> None:
    # Prepare: forgotten (SuperLink restarted in memory mode), then refused (key not registered again)
    supervisor, out = _supervisor(tmp_path, "forget,refused")
    # Execute
    status = supervisor.run()
    # Assert: one line instead of the thread's traceback, a second start, then the key named
    text = out.getvalue()
    assert status == 1 and (tmp_path / "starts").read_text() == "2"
    assert "Traceback" not in text and "Exception in thread" not in text
    assert "SuperNode terminated gracefully" in text  # Flower's own log lines still pass through
    assert "no longer knows this SuperNode (HTTP 401 on its heartbeat)" in text
    assert "refused this SuperNode's key" in text and "flwr supernode register" in text
    assert _gone(tmp_path / "superexec.pid")


def test_a_stop_signal_stops_both_processes(tmp_path: Path) -> None:
    # Prepare
    supervisor, out = _supervisor(tmp_path, "stay")

    def stop_once_both_run() -> None:
        while not (tmp_path / "superexec.pid").exists():
            time.sleep(0.05)
        supervisor.stop()

    # Execute
    threading.Thread(target=stop_once_both_run, daemon=True).start()
    status = supervisor.run()
    # Assert
    assert status == 0 and "stopped (SuperNode and SuperExec)" in out.getvalue()
    assert _gone(tmp_path / "superexec.pid")


def test_a_supernode_that_ended_itself_without_a_traceback_is_restarted_too(tmp_path: Path) -> None:
    # Prepare: the same 401, when Flower's process exits before its thread prints the traceback
    supervisor, out = _supervisor(tmp_path, "graceful,refused")
    # Execute
    status = supervisor.run()
    # Assert
    assert status == 1 and (tmp_path / "starts").read_text() == "2"
    assert "the SuperNode ended itself" in out.getvalue() and "no longer knows this SuperNode" in out.getvalue()


def test_exit_output_is_classified_and_each_supernode_gets_its_own_runtime_port() -> None:
    # Execute
    rest, port, superlink = split_runtime_args(["--superlink", "10.0.0.5:9092", "--port=9200", "--isolation", "process", "--insecure"])
    # Assert
    assert (rest, port, superlink) == (["--superlink", "10.0.0.5:9092", "--insecure"], 9200, "10.0.0.5:9092")
    assert classify_exit(FORGOTTEN_OUTPUT) == "forgotten" and classify_exit(NOT_REGISTERED_OUTPUT) == "not-registered"
    assert classify_exit("Connection attempt failed, retrying") is None
    assert classify_exit("SuperNode terminated gracefully.", 0) == "ended-itself"
    assert classify_exit("SuperNode terminated gracefully.", 1) is None
    assert Supervisor(["--port", "9200"]).port == 9200
    with pytest.raises(SystemExit, match="--host"):
        split_runtime_args(["--host", "0.0.0.0"])
