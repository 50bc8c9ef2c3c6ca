"""docs/deploy.md's command blocks, run as written on 127.0.0.1.

The blocks tagged ``guide=<name>`` are read out of the guide itself, so a command that stops
working fails here. Only two things differ from an operator's shell: the SuperLink's port 9093
becomes a free one, and ``HOME`` is a temporary folder (so ``~/.flwr``, ``~/flsplit-deploy`` and
the results land there). Each SuperNode block runs once per node with its ``i=0`` line set to
that node. Every process is started here and stopped here by PID, with all it started.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flsplit.launcher import BIN, PROJECT, _descendants, _signal_all, _wait_for_port, free_port
from flsplit.results import read_metrics

pytestmark = pytest.mark.slow  # starts real Flower processes from the guide's commands

GUIDE = PROJECT / "docs" / "deploy.md"
GUIDE_PORT = "9093"
BLOCK = re.compile(r"^```\w+ guide=([\w-]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
STOP_GRACE_S = 20.0


def guide_blocks() -> dict[str, str]:
    """The guide's tagged command blocks by name."""
    blocks = dict(BLOCK.findall(GUIDE.read_text(encoding="utf-8")))
    assert blocks, f"no guide=... blocks in {GUIDE}"
    return blocks


class Host:
    """One machine of the guide: a ``HOME``, the guide's blocks, and the processes they started."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.blocks = guide_blocks()
        self.env = {k: v for k, v in os.environ.items() if k != "FLWR_HOME"} | {
            "HOME": str(home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
        }
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}

    def script(self, name: str, node: int | None = None) -> str:
        text = self.blocks[name].replace(GUIDE_PORT, str(self.port))
        if node is not None:
            assert text.startswith("i=0\n"), f"guide={name} should start with 'i=0' (the node's number)"
            text = f"i={node}\n" + text.removeprefix("i=0\n")
        return text

    def run(self, name: str, timeout_s: float = 120.0) -> str:
        """Run a one-shot block from the project folder; its output (it must succeed)."""
        done = subprocess.run(
            ["bash", "-e", "-c", self.script(name)], cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        assert done.returncode == 0, f"guide={name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def start(self, name: str, node: int | None = None) -> Path:
        """Start a long-running block (a SuperLink or a SuperNode) in its own session; its log."""
        label = name if node is None else f"{name}{node}"
        log = self.home / f"{label}.log"
        with open(log, "ab") as handle:
            process = subprocess.Popen(
                ["bash", "-c", self.script(name, node)], cwd=PROJECT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.running[label] = (process, log)
        return log

    def stop(self, label: str) -> None:
        """SIGTERM the block's whole process tree, then SIGKILL what is left after a grace period."""
        process, _ = self.running.pop(label)
        tree = [process.pid, *_descendants(process.pid)]
        _signal_all(tree, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(_alive(pid) for pid in tree[1:]):
            time.sleep(0.2)
        _signal_all([*tree, *_descendants(process.pid)], signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for label in list(self.running):
            self.stop(label)

    def wait_for_superlink(self, label: str) -> None:
        process, log = self.running[label]
        _wait_for_port(self.port, process, log)

    def log(self, label: str) -> str:
        return self.running[label][1].read_text(errors="replace")

    def latest_run(self) -> list[dict]:
        """The metrics of the newest run under the smoke run's ``results-dir``."""
        newest = max((self.home / "flsplit-results").iterdir(), key=lambda p: p.stat().st_mtime)
        return read_metrics(newest / "metrics.jsonl")


def _process_running(root: int, module: str) -> int:
    """The PID of the process below ``root`` that runs ``python -m <module>``."""
    for pid in _descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if module.encode() in argv:
            return pid
    raise AssertionError(f"no {module} process below {root}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _assert_smoke_run(host: Host) -> None:
    output = host.run("smoke-run", timeout_s=300)
    rounds = host.latest_run()
    assert [r["round"] for r in rounds] == [1], output[-3000:]
    assert rounds[0]["num_clients"] == 2 and rounds[0]["evaluated_clients"] == [0, 1]
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z round 1/1: test_acc=", output), "flsplit's round line, time-stamped, in flwr run --stream"


def _wait_for_line(host: Host, label: str, pattern: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not re.search(pattern, host.log(label)):
        assert time.monotonic() < deadline, f"{label}: no '{pattern}' within {timeout_s:.0f} s:\n{host.log(label)[-3000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="class")  # one federation per class: the two never run at once
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """The guide's first try: an insecure SuperLink in memory and two SuperNodes, on one host."""
    host = Host(tmp_path_factory.mktemp("insecure-host"))
    try:
        host.start("insecure-superlink")
        host.wait_for_superlink("insecure-superlink")
        for i in range(2):
            host.start("insecure-supernode", node=i)
        host.run("insecure-laptop-config")
        yield host
    finally:
        host.stop_all()


@pytest.fixture(scope="class")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """The guide's TLS federation: certificates, keys, a SuperLink with a database, two registered SuperNodes."""
    host = Host(tmp_path_factory.mktemp("tls-host"))
    try:
        host.run("certificates")
        host.run("node-keys")
        host.start("tls-superlink")
        host.wait_for_superlink("tls-superlink")
        host.run("tls-laptop-config")
        host.run("register")
        for i in range(2):
            host.start("tls-supernode", node=i)
        yield host
    finally:
        host.stop_all()


class TestInsecureFederationOnOneHost:
    """The guide's first try, then its SuperLink restarted in memory mode."""

    def test_insecure_block_runs_a_short_federation_on_one_host(self, insecure: Host) -> None:
        # Execute / Assert: two SuperNodes on one host, each on its own Runtime API port
        _assert_smoke_run(insecure)
        ports = {re.search(r"Runtime API on 127\.0\.0\.1:(\d+)", insecure.log(f"insecure-supernode{i}")).group(1) for i in range(2)}  # type: ignore[union-attr]
        assert len(ports) == 2

    def test_supernodes_come_back_after_an_in_memory_superlink_restart(self, insecure: Host) -> None:
        # Prepare: the SuperLink forgets every node when it restarts in memory mode
        insecure.stop("insecure-superlink")
        insecure.start("insecure-superlink")
        insecure.wait_for_superlink("insecure-superlink")
        # Execute: each SuperNode's next heartbeat is refused; apps.supernode starts the pair again
        for i in range(2):
            _wait_for_line(insecure, f"insecure-supernode{i}", r"starting the SuperNode and its SuperExec again", timeout_s=90)
        # Assert: one clear line instead of the thread traceback, and the federation works again
        for i in range(2):
            log = insecure.log(f"insecure-supernode{i}")
            assert "no longer knows this SuperNode" in log
            assert "Traceback" not in log
        _assert_smoke_run(insecure)

    def test_a_killed_supernode_takes_its_warm_superexec_with_it(self, insecure: Host) -> None:
        # Prepare: the real processes under SuperNode 1's command
        process, _ = insecure.running["insecure-supernode1"]
        supernode, superexec = (_process_running(process.pid, module) for module in ("apps.fast_supernode", "apps.warm_superexec"))
        # Execute: SIGKILL the SuperNode alone, as a crash or the OOM killer would
        os.kill(supernode, signal.SIGKILL)
        process.wait(timeout=60)
        # Assert: the command ended, its SuperExec with it, and it said why
        assert not _alive(superexec)
        assert "the SuperNode exited with code -9" in insecure.log("insecure-supernode1")


class TestTlsFederationWithTwoSuperNodesOnOneHost:
    """TLS, node authentication and warm SuperNodes, then the SuperLink restarted on its database."""

    def test_tls_block_runs_two_authenticated_supernodes_on_one_host(self, secure: Host) -> None:
        # Execute: list until both SuperNodes are in (they connect within seconds), then run
        deadline = time.monotonic() + 90
        while (nodes := secure.run("list")).count("online") < 2 and time.monotonic() < deadline:
            time.sleep(2)
        _assert_smoke_run(secure)
        # Assert: both registered nodes were in; the private keys are the owner's alone
        assert nodes.count("online") == 2, nodes
        deploy = secure.home / "flsplit-deploy"
        for key in (deploy / "certs" / "server.key", deploy / "certs" / "ca.key", deploy / "keys" / "node0", deploy / "keys" / "node1"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key

    def test_a_superlink_with_a_database_restarts_and_its_nodes_reconnect_authenticated(self, secure: Host) -> None:
        # Prepare
        secure.stop("tls-superlink")
        # Execute: the same command again, on the same database
        secure.start("tls-superlink")
        secure.wait_for_superlink("tls-superlink")
        # Assert: both SuperNodes reconnect on their own, still registered, and a run completes
        for i in range(2):
            _wait_for_line(secure, f"tls-supernode{i}", r"Connection successful after", timeout_s=90)
        _assert_smoke_run(secure)
        for i in range(2):
            log = secure.log(f"tls-supernode{i}")
            assert "Traceback" not in log and "flsplit supernode: the" not in log, log[-3000:]

    def test_a_supernode_with_an_unregistered_key_exits_naming_the_key(self, secure: Host) -> None:
        # Prepare: a third key pair, never registered
        subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(secure.home / "flsplit-deploy" / "keys" / "node2")], check=True)
        # Execute: the guide's SuperNode command for node 2
        secure.start("tls-supernode", node=2)
        process, _ = secure.running["tls-supernode2"]
        status = process.wait(timeout=90)
        # Assert: it exits at once with the reason (not a network failure) and the fix
        log = secure.log("tls-supernode2")
        assert status != 0 and "Failed to activate SuperNode" in log
        assert "refused this SuperNode's key" in log and "flwr supernode register" in log
