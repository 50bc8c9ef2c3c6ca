"""Start real Flower processes on free loopback ports and run ``flwr run`` against them.

``SuperLink(simulation=True)`` is the simulation engine; ``SuperLink(simulation=False)`` plus
``SuperNode``s is a real deployment on 127.0.0.1, optionally with TLS. The end-to-end tests and
the experiment drivers use it, and so can a user who wants a local federation from Python.
Every process is started here with a known PID and stopped here together with everything it
spawned, so nothing outlives the caller. ``PROJECT`` is the Flower app that ``flwr run`` gets:
this checkout (flsplit installed with ``pip install -e .``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from flsplit.certificates import Certificates

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def run_config_text(config: dict[str, object]) -> str:
    """A run config as ``flwr run --run-config`` text: ``key=value`` pairs with TOML values."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str):
            return "'" + v.replace("'", "") + "'"
        return repr(v)

    return " ".join(f"{k}={value(v)}" for k, v in config.items())


class _Process:
    """A started Flower process whose whole process tree we own."""

    process: subprocess.Popen
    _log_handle: object

    def _start(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path, nice: int = 0) -> None:
        self.log_path = log
        self._log_handle = open(log, "wb")  # noqa: SIM115 - closed in stop()/kill()
        niced = ["nice", "-n", str(nice), *argv] if nice else argv  # every thread, from the start
        self.process = subprocess.Popen(niced, env=env, cwd=cwd, stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        if nice:
            try:
                _lower_autogroup(self.process.pid, nice)
            except RuntimeError:
                self.kill()
                raise

    def kill(self) -> None:
        """SIGKILL the process and every process it started, at once, as a crash would."""
        _signal_all([self.process.pid, *_descendants(self.process.pid)], signal.SIGKILL)
        self.process.wait()
        self._log_handle.close()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and everything it started, by PID."""
        tree = _descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        _signal_all([self.process.pid, *tree, *_descendants(self.process.pid)], signal.SIGKILL)
        self.process.wait()
        self._log_handle.close()  # type: ignore[attr-defined]

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class SuperLink(_Process):
    """``flower-superlink`` with its own ``FLWR_HOME``, ports and (optionally) TLS.

    ``database`` None keeps the SuperLink's state in memory (Flower's own default); a path
    keeps it in SQLite on disk, through which every message payload then passes (measured in
    ``experiments/results/deployment_latency.md``).
    """

    def __init__(
        self,
        home: Path,
        simulation: bool = True,
        certificates: Certificates | None = None,
        env: dict[str, str] | None = None,
        node_auth: bool = False,
        database: Path | None = None,
    ) -> None:
        self.home, self.simulation, self.certificates = home, simulation, certificates
        self.http_port = free_port()  # Control, Fleet and Runtime APIs all share it (flwr >= 1.40)
        self.env = os.environ | {
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        } | (env or {})
        home.mkdir(parents=True, exist_ok=True)
        security = f'root-certificates = "{certificates.ca_cert}"' if certificates else "insecure = true"
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{self.http_port}"\n{security}\n'
        )
        argv = [
            str(BIN / "flower-superlink"),
            "--isolation", "subprocess",
            "--host", "127.0.0.1",
            "--port", str(self.http_port),
            "--health-server-address", f"127.0.0.1:{free_port()}",
        ]
        argv += ["--database", str(database)] if database else []
        argv += ["--simulation"] if simulation else []
        if certificates:
            argv += ["--ssl-certfile", str(certificates.server_cert), "--ssl-keyfile", str(certificates.server_key), "--ssl-ca-certfile", str(certificates.ca_cert)]
        else:
            argv += ["--insecure"]
        argv += ["--enable-supernode-auth"] if node_auth else []
        self._start(argv, self.env, home, home / "superlink.log")
        _wait_for_port(self.http_port, self.process, self.log_path)

    def register_node(self, public_key: Path) -> None:
        """``flwr supernode register``: allow the SuperNode holding this key (node auth)."""
        done = subprocess.run(
            [str(BIN / "flwr"), "supernode", "register", str(public_key), "test"],
            env=self.env, cwd=self.home, capture_output=True, text=True, timeout=60, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"register failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")

    def launch(
        self, run_config: str, num_supernodes: int = 2, capture: bool = True, cpus_per_client: int = 1, ray_cpus: int | None = None
    ) -> subprocess.Popen[str]:
        """Start ``flwr run --stream`` on the project and return without waiting.

        ``ray_cpus`` tells Ray how many CPUs to schedule on (default: the machine's), so that
        ``ray_cpus / cpus_per_client`` clients run at once: a fleet of devices computing in
        parallel, time-sharing this machine's cores.
        """
        argv = [str(BIN / "flwr"), "run", str(PROJECT), "test", "--stream", "--run-config", run_config]
        if self.simulation:
            federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client}"
            argv += ["--federation-config", federation + (f" init-args-num-cpus={ray_cpus}" if ray_cpus else "")]
        output = subprocess.PIPE if capture else None
        return subprocess.Popen(argv, env=self.env, cwd=self.home, stdout=output, stderr=output, text=True)

    def run(
        self, run_config: str, num_supernodes: int = 2, timeout_s: float = 600.0, capture: bool = True, cpus_per_client: int = 1
    ) -> subprocess.CompletedProcess[str]:
        """``flwr run`` the project and return when the run has ended."""
        process = self.launch(run_config, num_supernodes, capture, cpus_per_client)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout or "", stderr or "")


class WarmSuperExec(_Process):
    """``apps.warm_superexec`` serving the ClientApp tasks of a SuperNode in ``--isolation process``."""

    def __init__(self, home: Path, runtime_port: int, env: dict[str, str], nice: int = 0) -> None:
        argv = [sys.executable, "-m", "apps.warm_superexec", "--runtime-api-address", f"127.0.0.1:{runtime_port}", "--insecure"]
        self._start(argv, env, home, home / "superexec.log", nice)


class SuperNode(_Process):
    """``flower-supernode`` connected to a deployment-mode ``SuperLink``.

    ``warm`` starts it with ``--isolation process`` beside a ``WarmSuperExec`` (the fork
    server of ``apps.warm_superexec``); it implies ``fast``. ``nice`` lowers the priority of
    the SuperNode and its SuperExec (and so of every ClientApp), as the simulation engine's
    Ray runs its clients at nice 15 under the ServerApp: for SuperNodes sharing a host with it.
    """

    def __init__(
        self,
        superlink: SuperLink,
        name: str,
        node_config: str,
        fast: bool = False,
        env: dict[str, str] | None = None,
        private_key: Path | None = None,
        wait: bool = True,
        warm: bool = False,
        nice: int = 0,
    ) -> None:
        home = superlink.home / name
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.superexec: WarmSuperExec | None = None
        launcher = [sys.executable, "-m", "apps.fast_supernode"] if fast or warm else [str(BIN / "flower-supernode")]
        argv = [
            *launcher,
            *(["--isolation", "process"] if warm else []),
            "--superlink", f"127.0.0.1:{superlink.http_port}",
            "--node-config", node_config,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--health-server-address", f"127.0.0.1:{free_port()}",
        ]
        if superlink.certificates:
            argv += ["--root-certificates", str(superlink.certificates.ca_cert)]
        else:
            argv += ["--insecure"]
        argv += ["--auth-supernode-private-key", str(private_key)] if private_key else []
        node_env = superlink.env | {"FLWR_HOME": str(home)} | (env or {})
        self._start(argv, node_env, home, home / "supernode.log", nice)
        if wait:
            _wait_for_port(self.port, self.process, self.log_path)
        if warm:
            self.superexec = WarmSuperExec(home, self.port, node_env, nice)

    def kill(self) -> None:
        """SIGKILL the SuperNode, its SuperExec and every process they started."""
        if self.superexec is not None:
            self.superexec.kill()
        super().kill()

    def stop(self) -> None:
        """Stop the SuperNode and its SuperExec, and everything they started, by PID."""
        if self.superexec is not None:
            self.superexec.stop()
        super().stop()


def _lower_autogroup(pid: int, nice: int) -> None:
    """Give the session of ``pid`` (it leads a new one) the autogroup nice ``nice``.

    With the kernel's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) nice
    only ranks processes within one session, and each of our processes has its own session.
    """
    autogroup = Path(f"/proc/{pid}/autogroup")
    if not autogroup.exists():
        return
    for _ in range(20):
        try:
            autogroup.write_text(str(nice))
            return
        except BlockingIOError:  # without CAP_SYS_ADMIN the kernel takes one such write per 100 ms
            time.sleep(0.11)
    raise RuntimeError(f"could not set the autogroup nice of process {pid} to {nice} ({autogroup})")


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
