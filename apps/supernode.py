"""One command for a warm SuperNode: the SuperNode and its warm SuperExec, started and stopped as one unit.

A warm SuperNode is two processes (``apps.fast_supernode --isolation process`` and
``apps.warm_superexec`` beside it). Started by hand, each SuperNode on a host needs its own
Runtime API port, and when one of the pair dies the other is left behind (a SuperExec retrying
every ~20 s for a SuperNode that is gone). This supervisor gives the pair a free Runtime API
port on 127.0.0.1 (unless ``--port`` is given), relays their output, and stops both when either
ends or when it is told to stop (SIGTERM, SIGINT), so nothing is orphaned.

When the SuperNode exits it says why in one line instead of Flower's thread traceback:

- the SuperLink no longer knows the node (HTTP 401 on the heartbeat: a SuperLink restarted
  without ``--database``). Flower's SuperNode then sends itself SIGINT and exits 0, printing a
  thread traceback only if it is slow to exit, so an exit 0 that nobody asked for counts as
  this too. It starts the pair again, which re-registers a node without
  ``--auth-supernode-private-key``; a node with a key is re-admitted only if the key is
  registered again (next point);
- the SuperLink refused to activate the node ("Failed to activate SuperNode"): its public key is
  not registered there;
- any other exit: its code, with the SuperNode's own last lines above.

    python -m apps.supernode --superlink HOST:PORT --root-certificates ca.pem --node-config "..."

Every argument is ``flower-supernode``'s; ``--isolation``, ``--host`` and ``--port`` are set here.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

from flsplit.launcher import free_port

NAME = "flsplit supernode"
SUPERNODE = (sys.executable, "-m", "apps.fast_supernode")
SUPEREXEC = (sys.executable, "-m", "apps.warm_superexec")
#: How long a stopped child gets to end on its own (SIGTERM) before it is killed.
STOP_GRACE_S = 15.0
FORGOTTEN = "forgotten"  # the SuperLink answered 401: it has no record of this node
ENDED_ITSELF = "ended-itself"  # exit 0 that nobody asked for: how Flower reacts to a 401 heartbeat
NOT_REGISTERED = "not-registered"
PORT_TAKEN = "port-taken"
LOG_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def classify_exit(output: str, code: int | None = None) -> str | None:
    """Why a SuperNode ended, from its last output lines and exit code; ``None`` if nothing known."""
    if "401 Unauthorized" in output and "send-node-heartbeat" in output:
        return FORGOTTEN
    if code == 0 and "SuperNode terminated gracefully" in output:
        return ENDED_ITSELF  # the same 401, when the process ended before the thread's traceback
    if "Failed to activate SuperNode" in output:
        return NOT_REGISTERED
    if "address already in use" in output:
        return PORT_TAKEN
    return None


def explain(reason: str | None, code: int | None, superlink: str, port: int) -> str:
    """The one line an operator reads when the SuperNode has ended."""
    if reason == FORGOTTEN:
        return (
            f"{NAME}: the SuperLink at {superlink} no longer knows this SuperNode (HTTP 401 on its heartbeat): it was "
            "restarted without --database, which forgets every node and registration"
        )
    if reason == ENDED_ITSELF:
        return (
            f"{NAME}: the SuperNode ended itself ('SuperNode terminated gracefully', exit 0): Flower does so when the "
            f"SuperLink at {superlink} no longer knows this SuperNode (HTTP 401 on its heartbeat, as after a restart "
            "without --database), or when the SuperNode alone was sent SIGINT or SIGTERM"
        )
    if reason == NOT_REGISTERED:
        return (
            f"{NAME}: the SuperLink at {superlink} refused this SuperNode's key (Failed to activate SuperNode): register "
            "its public key with 'flwr supernode register <key>.pub <federation>' (after a SuperLink restart without "
            "--database, again), check with 'flwr supernode list <federation>', then start this command again"
        )
    if reason == PORT_TAKEN:
        return f"{NAME}: the Runtime API port {port} is taken on 127.0.0.1; leave --port out to get a free one"
    return f"{NAME}: the SuperNode exited with code {code}; its last lines are above"


def split_runtime_args(argv: Sequence[str]) -> tuple[list[str], int | None, str]:
    """``flower-supernode`` arguments without ``--port``/``--host``/``--isolation``; the port; the SuperLink."""
    rest, port, superlink = [], None, "flower-supernode's default address"
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, _, inline = arg.partition("=")
        if name in ("--port", "--host", "--isolation"):
            value = inline or (args.pop(0) if args else "")
            if name == "--port":
                port = int(value)
            elif name == "--host" and value != "127.0.0.1":
                raise SystemExit(f"{NAME}: --host: the Runtime API stays on 127.0.0.1 (the SuperExec runs beside it)")
            continue
        if name == "--superlink":
            superlink = inline or (args[0] if args else superlink)
        rest.append(arg)
    return rest, port, superlink


@dataclass
class _Child:
    """A child process whose output is relayed line by line, the last lines kept."""

    process: subprocess.Popen
    label: str
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    @classmethod
    def start(cls, argv: list[str], label: str, out: TextIO) -> _Child:
        env = os.environ | {"PYTHONUNBUFFERED": "1"}  # lines arrive as written, in order
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        child = cls(process, label)
        threading.Thread(target=child._relay, args=(out,), daemon=True, name=f"relay-{label}").start()
        return child

    def _relay(self, out: TextIO) -> None:
        """Copy the child's lines to ``out``; a thread's 401-heartbeat traceback is held back and dropped."""
        held: list[str] = []
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.tail.append(line)
            if line.startswith("Exception in thread") or (held and not LOG_LINE.match(line)):
                held.append(line)
                if EXCEPTION_LINE.match(line):  # the traceback's last line
                    if classify_exit(line) != FORGOTTEN:  # run() explains that one in a line
                        self._write(out, "".join(held))
                    held = []
                continue
            if "developer.mozilla.org" not in line:  # httpx's footnote to a status error
                self._write(out, line)
        if held:  # the child ended inside a traceback
            self._write(out, "".join(held))

    def _write(self, out: TextIO, text: str) -> None:
        out.write("".join(f"[{self.label}] {line}\n" for line in text.splitlines()) if self.label else text)
        out.flush()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_GRACE_S``; wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


class Supervisor:
    """Runs a SuperNode and its warm SuperExec until either ends or a stop signal comes."""

    def __init__(self, argv: Sequence[str], out: TextIO = sys.stdout, node: Sequence[str] = SUPERNODE, executor: Sequence[str] = SUPEREXEC) -> None:
        self.args, port, self.superlink = split_runtime_args(argv)
        self.port = port or free_port()
        self.out = out
        self.node_program, self.executor_program = list(node), list(executor)
        self.stopping = threading.Event()

    def _start_pair(self) -> tuple[_Child, _Child | None]:
        runtime_api = ["--isolation", "process", "--host", "127.0.0.1", "--port", str(self.port)]
        node = _Child.start([*self.node_program, *runtime_api, *self.args], "", self.out)
        if not self._wait_for_runtime_api(node):
            return node, None
        executor = [*self.executor_program, "--runtime-api-address", f"127.0.0.1:{self.port}", "--insecure"]
        return node, _Child.start(executor, "superexec", self.out)

    def _wait_for_runtime_api(self, node: _Child) -> bool:
        """Whether the SuperNode's Runtime API is up (``False`` if it ended or a stop came first)."""
        while node.process.poll() is None and not self.stopping.is_set():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.1)
        return False

    def run(self) -> int:
        """Supervise until the pair ends; the exit status (0 when stopped by a signal)."""
        self._say(f"{NAME}: SuperNode Runtime API on 127.0.0.1:{self.port}, warm SuperExec beside it")
        while True:
            node, executor = self._start_pair()
            while not self.stopping.is_set() and node.process.poll() is None and (executor is None or executor.process.poll() is None):
                time.sleep(0.2)
            executor_died = executor is not None and executor.process.poll() is not None and node.process.poll() is None
            for child in (executor, node):
                if child is not None:
                    child.stop()
            if self.stopping.is_set():
                self._say(f"{NAME}: stopped (SuperNode and SuperExec)")
                return 0
            if executor_died:
                code = executor.process.returncode  # type: ignore[union-attr]
                self._say(f"{NAME}: the warm SuperExec exited with code {code} (its last lines are above); stopped its SuperNode too")
                return code or 1
            time.sleep(0.3)  # the relay threads pass on the last lines
            reason = classify_exit("".join(node.tail), node.process.returncode)
            self._say(explain(reason, node.process.returncode, self.superlink, self.port))
            if reason not in (FORGOTTEN, ENDED_ITSELF):  # those were admitted once: start again to register anew
                return node.process.returncode or 1
            self._say(f"{NAME}: starting the SuperNode and its SuperExec again, to register anew")

    def stop(self, *_: object) -> None:
        """Ask the loop to stop both processes (a signal handler)."""
        self.stopping.set()

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the supervisor; SIGTERM and SIGINT stop the SuperNode and its SuperExec together."""
    supervisor = Supervisor(sys.argv[1:] if argv is None else argv)

    def on_signal(signum: int, _: FrameType | None) -> None:
        supervisor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
