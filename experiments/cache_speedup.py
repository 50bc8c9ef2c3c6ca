"""What the ClientApp's per-process slice cache saves, measured side by side.

Runs the real ``train.step`` handler in this process for CSL and DSL, alternating messages
served from the cache with messages that must rebuild the slice from ``context.state`` (as when
the next message lands on another Ray worker, or in deployment). Writes
``experiments/results/cache_speedup.json`` and ``.md``.

    python -m experiments.cache_speedup
"""

from __future__ import annotations

import statistics
import time

import torch
from flwr.app import Context, Message, RecordDict

from experiments.tables import write_results
from flsplit.flwr_internals import as_task, stamp
from flsplit.protocol import MessageKind
from flsplit.wire import Packet, encode
from apps import client_app, client_state


def _context(strategy: str, steps: int, node_id: int) -> Context:
    raw = {
        "strategy": strategy, "dataset": "synthetic", "model": "resnet20", "batch-size": 128,
        "max-batches": steps + 1, "chunk-mb": 1.0,  # one batch per DSL message
    }
    return Context(run_id=7, node_id=node_id, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(), run_config=raw)


def _request(strategy: str, reply: Message | None) -> Message:
    tensors = {}
    if strategy == "csl" and reply is not None and "activations" in reply.content.array_records:
        z = torch.from_numpy(reply.content["activations"]["z"].numpy())
        tensors = {"gradients": {"dz": torch.full_like(z, 1e-4)}}  # as the server would send
    message = Message(encode(Packet(tensors, {"round": 1})), dst_node_id=1, message_type=MessageKind.STEP.message_type)
    return stamp(message, message_id=str(time.perf_counter_ns()))


def step_times(strategy: str, steps: int) -> tuple[list[float], list[float]]:
    """Handler seconds per ``train.step``: two identical clients, one served from the cache and
    one rebuilt from ``context.state`` every time, alternating so both see the same load."""
    contexts = {True: _context(strategy, steps, 1), False: _context(strategy, steps, 2)}
    replies: dict[bool, Message | None] = {True: None, False: None}
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(steps):
        for cached in (True, False):
            if not cached:
                client_state.drop_cached_slices(run_id=7, node_id=2)
            message = _request(strategy, replies[cached])
            started = time.perf_counter()
            replies[cached] = client_app.train_step(message, contexts[cached])
            times[cached].append(time.perf_counter() - started)
    return times[True], times[False]


def main() -> None:
    rows = []
    for strategy in ("csl", "dsl"):
        with as_task(task_id=1, run_id=7, node_id=1):
            cached, rebuilt = step_times(strategy, 12)
        hit, miss = statistics.median(cached[2:]), statistics.median(rebuilt[2:])
        rows.append({"strategy": strategy, "cached_s": hit, "rebuilt_s": miss, "saving_s": miss - hit, "rebuilt_over_cached": miss / hit})
        print(rows[-1], flush=True)
    print(write_results("cache_speedup", rows))


if __name__ == "__main__":
    main()
