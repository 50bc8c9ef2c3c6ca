"""Start a real SuperLink (simulation mode) on free loopback ports and run ``flwr run`` on it.

Used by the end-to-end tests and the experiment drivers. Every process is started here with a
known PID and killed here, process group and all, so nothing outlives the caller.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimulationSuperLink:
    """A ``flower-superlink --simulation`` with its own ``FLWR_HOME`` and ports."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.http_port = free_port()
        self.env = os.environ | {
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "test"\n\n[superlink.test]\n'
            f'address = "127.0.0.1:{self.http_port}"\ninsecure = true\n'
        )
        self.log = open(home / "superlink.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--simulation",
                "--isolation", "subprocess",
                "--host", "127.0.0.1",
                "--port", str(self.http_port),
                "--control-api-address", f"127.0.0.1:{free_port()}",
                "--fleet-api-address", f"127.0.0.1:{free_port()}",
                "--health-server-address", f"127.0.0.1:{free_port()}",
                "--database", str(home / "state.db"),
            ],
            env=self.env,
            cwd=home,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_until_listening()

    def _wait_until_listening(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"superlink exited: {(self.home / 'superlink.log').read_text()[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.http_port)) == 0:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("superlink did not start listening in time")

    def launch(self, run_config: str, num_supernodes: int = 2, capture: bool = True) -> subprocess.Popen[str]:
        """Start ``flwr run --stream`` on the project and return without waiting."""
        output = subprocess.PIPE if capture else None
        return subprocess.Popen(
            [
                str(BIN / "flwr"), "run", str(PROJECT), "test", "--stream",
                "--run-config", run_config,
                "--federation-config", f"num-supernodes={num_supernodes} client-resources-num-cpus=1",
            ],
            env=self.env,
            cwd=self.home,
            stdout=output,
            stderr=output,
            text=True,
        )

    def run(self, run_config: str, num_supernodes: int = 2, timeout_s: float = 600.0, capture: bool = True) -> subprocess.CompletedProcess[str]:
        """``flwr run`` the project and return when the run has ended."""
        process = self.launch(run_config, num_supernodes, capture)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout or "", stderr or "")

    def __enter__(self) -> "SimulationSuperLink":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL the SuperLink and every process it started, at once, as a crash would."""
        tree = _descendants(self.process.pid)
        _signal_all([self.process.pid, *tree], signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self) -> None:
        """Stop the SuperLink and every process it started (SuperExec, ServerApp, Ray) by PID."""
        tree = _descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        _signal_all([self.process.pid, *tree, *_descendants(self.process.pid)], signal.SIGKILL)
        self.process.wait()
        self.log.close()


def _descendants(root: int) -> list[int]:
    """PIDs of all processes below ``root``, found through ``/proc`` (Ray detaches its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            found.append(child)
            frontier.append(child)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
