"""``flower-superexec`` whose ClientApp tasks fork from a warm process: a version-guarded seam of flwr 1.41 and 1.42.

flwr 1.41's SuperExec starts every ClientApp task as a new ``flwr-clientapp`` process (its
``SubprocessExecutor``), which imports flwr, torch and flsplit again for every message. This
launcher keeps one *fork server* per SuperNode that has imported them once, and runs each
ClientApp task in a child forked from it. The child calls Flower's own ``run_clientapp`` with
the task's token, so it pulls the message and the context from the SuperNode, installs the
FAB, loads the ClientApp, runs it and pushes the reply exactly as ``flwr-clientapp`` would; the
only change is that its imports are already done. The seam is the SuperExec's executor
(``get_executor`` in ``run_superexec``); tasks of any other type still get a subprocess.

Start the SuperNode with ``--isolation process`` and this SuperExec beside it, pointed at the
SuperNode's Runtime API (``--host``/``--port`` of the SuperNode, default 127.0.0.1:9094)::

    python -m apps.fast_supernode --isolation process --superlink HOST:PORT --node-config "..."
    python -m apps.warm_superexec --runtime-api-address 127.0.0.1:9094 --insecure

``FLSPLIT_WARM_PRELOAD`` (default ``apps.client_app``) names the modules the fork server
imports. The app's own modules (flsplit, strategies, apps) are only reused in a child if the
run's installed FAB has byte-identical copies of them; otherwise (a different version, or the
first task of a run, before its FAB is installed) the child forgets them and imports the FAB's.

The fork server is forked before Flower starts a thread or opens a connection, and it never
initialises CUDA: CUDA cannot survive a fork, so it refuses to serve if a preloaded module did
(``PYTORCH_NVML_BASED_CUDA_CHECK=1`` keeps ``torch.cuda.is_available()`` from doing so). On a
GPU node each child therefore creates its own CUDA context, as a fresh process would; the fork
server saves the imports, not that. On any other flwr version, or an executor seam or
``run_clientapp`` that changed, it warns and runs Flower's own SuperExec.
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from flwr.common.constant import FAB_HASH_TRUNCATION
from flwr.supercore.constant import ExecutorType, TaskType
from flwr.supercore.superexec import run_superexec as superexec_loop
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult, SubprocessExecutor
from flwr.supercore.utils import get_flwr_home
from flwr.supernode.runtime.run_clientapp import run_clientapp

from flsplit.flwr_internals import FlowerChangedError, check_version, step_aside
from apps import fast_pull

PRELOAD_ENV = "FLSPLIT_WARM_PRELOAD"
DEFAULT_PRELOAD = "apps.client_app"
READY = "ready"
#: What ``launch`` passes on to ``run_clientapp``: this seam's contract with flwr 1.41.
RUN_CLIENTAPP_PARAMETERS = ("runtime_api_address", "token", "insecure", "certificates", "parent_pid", "runtime_dependency_install")
EXECUTOR_SEAM_SOURCE = "executor = get_executor("


def check_supported() -> None:
    """Raise ``FlowerChangedError`` unless flwr has the executor seam and ``run_clientapp`` this uses."""
    check_version("apps.warm_superexec")
    if EXECUTOR_SEAM_SOURCE not in inspect.getsource(superexec_loop.run_superexec) or not callable(getattr(superexec_loop, "get_executor", None)):
        raise FlowerChangedError("flwr's SuperExec changed: run_superexec no longer builds its executor with get_executor")
    parameters = tuple(inspect.signature(run_clientapp).parameters)
    if parameters != RUN_CLIENTAPP_PARAMETERS:
        raise FlowerChangedError(f"flwr's run_clientapp changed: parameters {parameters}, expected {RUN_CLIENTAPP_PARAMETERS}")
    fields = set(ExecutionSpec.__dataclass_fields__)
    if not {"task_type", "token", "insecure", "root_certificates_path", "parent_pid", "suppress_output", "fab_hash"} <= fields:
        raise FlowerChangedError(f"flwr's ExecutionSpec changed: fields {sorted(fields)}")


def first_party_sources(preloaded: list[str]) -> dict[str, tuple[Path, bytes]]:
    """Import ``preloaded``; return the loaded modules of their project: name -> (path inside a FAB, source)."""
    for name in preloaded:
        importlib.import_module(name)
    roots = {Path(sys.modules[name.split(".")[0]].__file__ or "").resolve().parents[1] for name in preloaded}
    found = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name == "__main__" or not isinstance(file, str) or not os.path.isabs(file) or not file.endswith(".py"):
            continue
        path = Path(file).resolve()
        inside = Path(*name.split(".")[: None if hasattr(module, "__path__") else -1], path.name)
        if any(root / inside == path for root in roots):  # not, e.g., a virtual environment inside the project
            found[name] = (inside, path.read_bytes())
    return found


def installed_fab(fab_hash: str | None) -> Path | None:
    """The directory Flower installed the FAB with this hash in (``None`` if not installed yet)."""
    if not fab_hash:
        return None
    matches = sorted((get_flwr_home() / "apps").glob(f"*.{fab_hash[:FAB_HASH_TRUNCATION]}"))
    return matches[0] if matches else None


def fab_matches(fab_dir: Path, sources: dict[str, tuple[Path, bytes]]) -> bool:
    """Whether every preloaded module the FAB also ships is byte-identical in the FAB."""
    return all((fab_dir / inside).read_bytes() == source for inside, source in sources.values() if (fab_dir / inside).is_file())


def _preload(names: list[str]) -> dict[str, tuple[Path, bytes]]:
    import torch  # noqa: PLC0415 - checked after the app's imports, which may have touched CUDA

    sources = first_party_sources(names)
    if torch.cuda.is_initialized():
        raise RuntimeError(f"{PRELOAD_ENV}={','.join(names)} initialised CUDA, which a forked child cannot use; preload less")
    return sources


def _serve(conn: Connection, names: list[str]) -> None:
    """The fork server: preload, then fork one child per task spec until the SuperExec goes."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        sources = _preload(names)
    except Exception as err:  # noqa: BLE001 - reported to the SuperExec, which exits with it
        conn.send(f"preload of {names} failed: {err!r}")
        return
    conn.send(READY)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished children
    verified: dict[str, bool] = {}
    while True:
        try:
            spec: ExecutionSpec = conn.recv()
        except EOFError:  # the SuperExec has gone
            return
        fab_dir = installed_fab(spec.fab_hash)
        if fab_dir is not None and spec.fab_hash not in verified:
            verified[spec.fab_hash] = fab_matches(fab_dir, sources)  # type: ignore[index]
        keep = verified.get(spec.fab_hash or "", False)
        if os.fork() == 0:
            conn.close()
            _run_task(spec, [] if keep else list(sources))


def _run_task(spec: ExecutionSpec, forget: list[str]) -> None:
    """In a forked child: run the task as ``flwr-clientapp`` would, then exit without cleanup."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates  # noqa: PLC0415

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for name in forget:
        sys.modules.pop(name, None)
    if spec.suppress_output:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    code = 1
    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
        code = 0
    except SystemExit as done:  # run_clientapp ends with flwr_exit
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    except BaseException:  # noqa: BLE001 - the child must end here, never in the fork server's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ForkServer:
    """The warm process, forked from this one before Flower starts; it forks the task children."""

    def __init__(self, names: list[str]) -> None:
        parent_end, child_end = multiprocessing.Pipe()
        self.conn = parent_end
        self.process = multiprocessing.get_context("fork").Process(target=_serve, args=(child_end, names), daemon=True, name="flsplit-fork-server")
        self.process.start()
        child_end.close()
        status = self.conn.recv() if self.conn.poll(600) else "no answer within 600 s"
        if status != READY:
            self.close()
            raise RuntimeError(f"apps.warm_superexec: the fork server did not start: {status}")

    def submit(self, spec: ExecutionSpec) -> LaunchResult:
        """Hand a task to the fork server; it forks the child at once."""
        try:
            self.conn.send(spec)
        except OSError as err:
            return LaunchResult.failed(f"the warm fork server is gone ({err}); restart apps.warm_superexec")
        return LaunchResult.accepted()

    def close(self) -> None:
        """Stop the fork server (running task children finish on their own)."""
        self.conn.close()
        self.process.terminate()
        self.process.join(timeout=5)


class WarmExecutor(SubprocessExecutor):
    """Flower's subprocess executor, except that ClientApp tasks fork from the fork server."""

    def __init__(self, server: ForkServer) -> None:
        self.server = server

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        """Fork a ClientApp task from the warm process; start any other task as Flower does."""
        if spec.task_type != TaskType.CLIENT_APP:
            return super().launch(spec)
        return self.server.submit(spec)

    def close(self) -> None:
        """Stop the fork server with the SuperExec."""
        self.server.close()


def install(server: ForkServer) -> None:
    """Make this process's SuperExec use ``WarmExecutor`` where it would use the subprocess one."""
    check_supported()
    flower_get_executor = superexec_loop.get_executor

    def get_executor(executor_type: ExecutorType, *args: object, **kwargs: object) -> object:
        if executor_type == ExecutorType.SUBPROCESS:
            return WarmExecutor(server)
        return flower_get_executor(executor_type, *args, **kwargs)

    superexec_loop.get_executor = get_executor  # type: ignore[assignment]


def main() -> None:
    """Start the fork server, then run ``flower-superexec`` with the given arguments.

    On a flwr this seam was not written for it warns and runs Flower's own SuperExec (a new
    process per task).
    """
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    try:
        check_supported()
    except FlowerChangedError as err:
        step_aside("apps.warm_superexec's warm ClientApp tasks", err)
    else:
        names = [name.strip() for name in os.environ.get(PRELOAD_ENV, DEFAULT_PRELOAD).split(",") if name.strip()]
        fast_pull.apply()  # inherited by every forked task: its pull of the message from the SuperNode
        install(ForkServer(names))
    from flwr.supercore.cli import flower_superexec  # noqa: PLC0415

    flower_superexec()


if __name__ == "__main__":
    main()
