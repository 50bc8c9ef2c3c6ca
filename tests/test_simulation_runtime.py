"""The simulation-runtime fixes: pickup on push and equal priority; on a changed flwr they warn and step aside."""

import os
import subprocess
import sys
import threading
from queue import Queue

import flwr
import pytest

from apps import simulation_runtime


class _State:
    """The two LinkState methods the extractor uses, over a plain list."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def store_message_ins(self, message: tuple[int, str]) -> str:
        with self.lock:
            self.pending.append(message)
        return message[1]

    def get_message_ins(self, node_id: int, limit: int | None) -> list[tuple[int, str]]:
        with self.lock:
            mine = [m for m in self.pending if m[0] == node_id][:limit]
            self.pending = [m for m in self.pending if m not in mine]
        return mine


def test_installed_flower_still_has_the_extractor_loop_the_fix_replaces() -> None:
    # Fails when a flwr upgrade changes the simulation runtime's 0.1 s extractor loop.
    simulation_runtime.check_supported()


@pytest.mark.parametrize("version", ["1.40.2", "1.43.0", "2.0.0"])
def test_fix_refuses_other_flower_versions(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(flwr, "__version__", version)
    with pytest.raises(simulation_runtime.FlowerChangedError, match=version):
        simulation_runtime.check_supported()


def test_on_an_unknown_flower_the_pickup_warns_and_keeps_flowers_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: this process hosts the runtime, and flwr reports a version the fix was not written for
    runtime = simulation_runtime._runtime()
    flowers_loop = runtime.add_messages_to_queue
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    # Execute
    with pytest.warns(RuntimeWarning, match="1.43.0"):
        installed = simulation_runtime.wake_pickup_on_push()
    # Assert
    assert installed is False and runtime.add_messages_to_queue is flowers_loop
    assert simulation_runtime.pickup_mode() == "poll"


def test_flsplit_imports_and_the_client_app_loads_on_an_unknown_flower() -> None:
    # A new process: the runtime loaded, flwr claiming a version no patch knows, then the ClientApp
    code = (
        "import warnings, flwr; import flwr.server.superlink.fleet.vce.vce_api; flwr.__version__ = '9.0.0'\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always'); import apps.client_app, apps.server_app, flsplit.wire\n"
        "print([str(w.message) for w in seen])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "apps.simulation_runtime supports flwr" in done.stdout and "9.0.0" in done.stdout


def test_fix_refuses_a_changed_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulation_runtime, "POLL_SOURCE", "f_stop.wait(0.5)")
    with pytest.raises(simulation_runtime.FlowerChangedError, match="extractor changed"):
        simulation_runtime.check_supported()


def test_a_pushed_message_is_picked_up_without_waiting_for_the_fallback_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a fallback poll far longer than the test waits, so only the push can wake the loop
    monkeypatch.setattr(simulation_runtime, "FALLBACK_POLL_S", 600.0)
    state, queue, stop = _State(), Queue(), threading.Event()
    loop = threading.Thread(target=simulation_runtime.add_messages_on_push, args=(state, queue, {7: 0, 8: 1}, stop))
    loop.start()
    # Execute
    state.store_message_ins((8, "m1"))
    state.store_message_ins((7, "m2"))
    picked = {queue.get(timeout=30)[1], queue.get(timeout=30)[1]}
    # Assert
    stop.set()
    state.store_message_ins((7, "wake"))  # one more push wakes the loop so it sees the stop
    loop.join(timeout=30)
    assert picked == {"m1", "m2"} and not loop.is_alive()


def test_fix_installs_only_where_the_runtime_runs_and_can_be_opted_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    runtime = simulation_runtime._runtime()  # imports the runtime, as flwr-simulation has
    monkeypatch.setattr(runtime, "add_messages_to_queue", runtime.add_messages_to_queue)
    monkeypatch.setenv(simulation_runtime.PICKUP_ENV, "poll")
    # Execute / Assert: opted out, Flower's loop stays
    assert simulation_runtime.wake_pickup_on_push() is False and simulation_runtime.pickup_mode() == "poll"
    monkeypatch.delenv(simulation_runtime.PICKUP_ENV)
    assert simulation_runtime.wake_pickup_on_push() is True and simulation_runtime.pickup_mode() == "push"
    # ... and nothing happens in a process without the runtime (a Ray worker, a deployed ClientApp)
    monkeypatch.delitem(simulation_runtime.sys.modules, simulation_runtime.RUNTIME_MODULE)
    assert simulation_runtime.wake_pickup_on_push() is False


def test_opted_in_server_thread_drops_to_the_workers_niceness_and_no_other_thread_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    before = os.getpriority(os.PRIO_PROCESS, 0)
    monkeypatch.setenv("RAY_worker_niceness", str(before + 3))
    monkeypatch.setenv(simulation_runtime.PRIORITY_ENV, "match-workers")
    seen: list[int] = []
    # Execute: in a thread of its own (on Linux a niceness is per thread)
    worker = threading.Thread(target=lambda: seen.extend([simulation_runtime.match_worker_priority(), os.getpriority(os.PRIO_PROCESS, 0)]))
    worker.start()
    worker.join()
    # Assert
    assert seen == [before + 3, before + 3]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_server_priority_stays_flowers_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    before = os.getpriority(os.PRIO_PROCESS, 0)
    monkeypatch.setenv("RAY_worker_niceness", str(before + 3))
    monkeypatch.delenv(simulation_runtime.PRIORITY_ENV, raising=False)
    seen: list[int] = []
    # Execute
    worker = threading.Thread(target=lambda: seen.append(simulation_runtime.match_worker_priority()))
    worker.start()
    worker.join()
    # Assert
    assert seen == [before]
