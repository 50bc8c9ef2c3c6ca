"""Two changes to Flower's simulation runtime (flwr 1.41, 1.42): one on by default, one opt-in.

1. **Pickup on push (default).** The runtime's extractor thread
   (``vce_api.add_messages_to_queue``) asks the LinkState for each node's next message, then
   waits 0.1 s, so a message waited 57 ms (median) before a worker saw it
   (``experiments/message_breakdown.py``). ``wake_pickup_on_push`` swaps that loop for one that
   waits on an event the LinkState sets whenever the ServerApp stores a message (0.17 ms); the
   0.1 s wait stays as the fallback, so idle costs nothing more. On 2 CPU cores the round time
   did not change measurably (the wait overlaps other clients' compute); it is for accelerators,
   where a batch takes milliseconds.
2. **Equal priority (opt-in).** Ray starts its workers (the ClientApps) at nice 15 while the
   ServerApp computes at nice 0. ``match_worker_priority`` lowers the ServerApp's thread to the
   workers' niceness. Measured on 2 cores it made rounds slower (DSL 1.20x -> 1.53x the plain
   loop, CSL 1.57x -> 1.74x, ``experiments/results/bench.md``): the server, which serves every
   client, is the critical path, so Flower's priorities stay unless
   ``FLSPLIT_SERVER_PRIORITY = match-workers``.

The pickup must be swapped before the runtime starts its extractor. flwr 1.41's ``start_vce``
loads the ClientApp in its main thread first, so ``apps/client_app.py`` calls
``wake_pickup_on_push`` on import; it does nothing in any other process (a Ray worker, a
deployed ClientApp), where the runtime module was never imported. ``FLSPLIT_SIMULATION_PICKUP
= poll`` keeps Flower's loop (both variables are read in the environment of the SuperLink that
runs the simulation). On another flwr version or a changed loop the pickup warns and steps aside
(``flsplit.flwr_internals.step_aside``): Flower's own 0.1 s loop then runs.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
from collections.abc import Mapping
from queue import Queue
from types import ModuleType
from typing import Any

from flsplit.flwr_internals import FlowerChangedError, check_version, step_aside

RUNTIME_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
POLL_SOURCE = "f_stop.wait(0.1)"
PICKUP_ENV = "FLSPLIT_SIMULATION_PICKUP"
PRIORITY_ENV = "FLSPLIT_SERVER_PRIORITY"
#: Ray's default ``worker_niceness``; ``RAY_worker_niceness`` overrides it.
RAY_DEFAULT_WORKER_NICENESS = 15
FALLBACK_POLL_S = 0.1


def _runtime() -> ModuleType:
    import flwr.server.superlink.fleet.vce.vce_api as vce_api  # noqa: PLC0415 - checked before use

    return vce_api


def check_supported() -> None:
    """Raise ``FlowerChangedError`` unless flwr has the extractor loop this module replaces."""
    check_version("apps.simulation_runtime")
    runtime = _runtime()
    loop = inspect.getsource(runtime.add_messages_to_queue)
    if POLL_SOURCE not in loop or "target=add_messages_to_queue" not in inspect.getsource(runtime.run_api):
        raise FlowerChangedError(f"flwr's simulation extractor changed: '{POLL_SOURCE}' in add_messages_to_queue, started by run_api, is gone")


def add_messages_on_push(state: Any, queue: Queue, nodes_mapping: Mapping[int, int], f_stop: threading.Event) -> None:
    """Flower's extractor loop, woken by every stored message instead of only every 0.1 s."""
    pushed = _push_signal(state)
    while not f_stop.is_set():
        pushed.clear()  # before the scan: a push during the scan wakes the next wait at once
        for node_id in nodes_mapping.keys():
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        pushed.wait(FALLBACK_POLL_S)


def _push_signal(state: Any) -> threading.Event:
    """An event set after each ``state.store_message_ins`` (the ServerApp's push)."""
    pushed = threading.Event()
    store = state.store_message_ins

    def store_and_signal(message: Any) -> Any:
        stored = store(message)
        pushed.set()
        return stored

    state.store_message_ins = store_and_signal
    return pushed


def in_simulation_runtime() -> bool:
    """Whether this process hosts Flower's simulation runtime (its ServerApp and extractor)."""
    return RUNTIME_MODULE in sys.modules


def wake_pickup_on_push() -> bool:
    """Install ``add_messages_on_push`` in the simulation runtime, if this process runs one.

    Returns whether it is installed. No-op where the runtime is not loaded or
    ``FLSPLIT_SIMULATION_PICKUP=poll``; on a flwr it was not written for it warns and steps aside.
    """
    if not in_simulation_runtime() or os.environ.get(PICKUP_ENV, "push") == "poll":
        return False
    try:
        check_supported()
    except FlowerChangedError as err:
        step_aside("apps.simulation_runtime's pickup on push", err)
        return False
    _runtime().add_messages_to_queue = add_messages_on_push
    return True


def pickup_mode() -> str:
    """``push`` where this process's simulation runtime uses the fix, else ``poll``."""
    runtime = sys.modules.get(RUNTIME_MODULE)
    return "push" if runtime is not None and runtime.add_messages_to_queue is add_messages_on_push else "poll"


def worker_niceness() -> int:
    """The niceness Ray gives its workers (``RAY_worker_niceness``, else Ray's default)."""
    return int(os.environ.get("RAY_worker_niceness", RAY_DEFAULT_WORKER_NICENESS))


def match_worker_priority() -> int:
    """With ``FLSPLIT_SERVER_PRIORITY=match-workers``, lower the calling thread to the Ray
    workers' niceness (never raise it); return the thread's niceness.

    On Linux a niceness belongs to a thread, and threads inherit it, so calling this before the
    ServerApp's first computation covers the thread pools torch starts from it.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    target = worker_niceness()
    if target > current and os.environ.get(PRIORITY_ENV, "keep") == "match-workers":
        os.setpriority(os.PRIO_PROCESS, 0, target)
    return os.getpriority(os.PRIO_PROCESS, 0)


def worker_resources() -> dict[str, float]:
    """What Ray reserved for the calling ClientApp (``worker_cpus``, ``worker_gpus``); empty outside a Ray worker."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    assigned = ray.get_runtime_context().get_assigned_resources()
    return {"worker_cpus": float(assigned.get("CPU", 0.0)), "worker_gpus": float(assigned.get("GPU", 0.0))}


def concurrent_workers(worker_cpus: float, worker_gpus: float) -> int:
    """How many ClientApps Flower's Ray backend runs at once with these resources each (its own arithmetic)."""
    from flwr.simulation.ray_transport.ray_actor import pool_size_from_resources  # noqa: PLC0415 - Ray is up only here

    resources = {"num_cpus": worker_cpus} | ({"num_gpus": worker_gpus} if worker_gpus else {})
    return pool_size_from_resources(resources)
