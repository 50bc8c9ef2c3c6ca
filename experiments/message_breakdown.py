"""Where one simulation message's time goes, part by part, for an 8 MiB and a 64 MiB payload.

A CSL batch at cut ``s`` (128 x 16 x 32 x 32 fp32 activations) is 8 MiB; a DSL chunk of eight
batches is 64 MiB. For each, the median of ``--repeats`` of every step a payload takes in
Flower's simulation engine (flwr 1.41), measured on the components themselves:

- ``encode_ms``: ``flsplit.wire.encode`` (tensor to Flower ``RecordDict``);
- ``flower_objects_ms``: Flower's split of the message into content-addressed objects and their
  hashes (what ``get_all_nested_objects`` + ``deflate`` does for the gRPC path; deployment only,
  the simulation engine passes the ``Message`` object itself);
- ``ray_round_trip_ms``: the message to a Ray actor and the same message back (the engine
  sends each message and its reply through ``actor.run.remote``), minus the same call with an
  empty payload;
- ``decode_validate_ms``: ``flsplit.wire.decode`` against the activation specs;
- ``pickup_wait_ms``: from the ServerApp's push to the message being in the workers' queue,
  with Flower's 0.1 s extractor loop (``poll``) and with ``apps.simulation_runtime``'s
  (``push``), on an in-memory stand-in for the LinkState.

    python -m experiments.message_breakdown        # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from queue import Queue
from typing import Any

import ray
import torch
from flwr.app import Message
from flwr.server.superlink.fleet.vce import vce_api

from experiments.tables import write_results
from experiments.timing import median_ms
from flsplit.flwr_internals import as_task, serialized_objects, stamp
from flsplit.wire import Packet, decode, encode, upload_specs
from apps.simulation_runtime import add_messages_on_push

ACTIVATION = (16, 32, 32)  # resnet20 cut s
PAYLOADS_MIB = (8, 64)


@ray.remote
class _Echo:
    """Stands in for Flower's ClientApp actor: takes a message, returns one as large."""

    def run(self, message: Message) -> Message:
        return message


class _State:
    """The two LinkState calls the extractor makes, over a list (the real one adds a lock and checks)."""

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.lock = threading.Lock()

    def store_message_ins(self, message: Any) -> None:
        with self.lock:
            self.pending.append(message)

    def get_message_ins(self, node_id: int, limit: int | None) -> list[Any]:
        with self.lock:
            taken, self.pending = self.pending[:limit], self.pending[limit:]
        return taken


def pickup_wait_ms(loop: Callable[..., None], repeats: int) -> float:
    """Median ms from ``store_message_ins`` to the message in the queue, pushes at random phases."""
    state, queue, stop = _State(), Queue(), threading.Event()
    thread = threading.Thread(target=loop, args=(state, queue, {1: 0}, stop), daemon=True)
    thread.start()
    waits = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(repeats):
        time.sleep(float(torch.rand(1, generator=generator)) * 0.1)  # a push at any phase of the poll
        pushed = time.perf_counter()
        state.store_message_ins(pushed)
        queue.get(timeout=5)
        waits.append(time.perf_counter() - pushed)
    stop.set()
    state.store_message_ins(None)  # wake the push loop so it sees the stop
    return 1000 * statistics.median(waits)


def measure(mib: int, repeats: int, echo: Any) -> dict[str, Any]:
    batch = mib * (1 << 20) // (4 * ACTIVATION[0] * ACTIVATION[1] * ACTIVATION[2])
    packet = Packet.upload(torch.randn(batch, *ACTIVATION), torch.randint(0, 10, (batch,)), {"round": 1})
    content = encode(packet)
    with as_task(task_id=1, run_id=1, node_id=0):  # a Message needs the run it belongs to
        message = stamp(Message(content, dst_node_id=1, message_type="train.step"), "m")
        empty = stamp(Message(encode(Packet(info={"round": 1})), dst_node_id=1, message_type="train.step"), "e")
    specs = upload_specs(ACTIVATION, 10)
    ray.get(echo.run.remote(empty))  # warm the actor
    ray_full = median_ms(lambda: ray.get(echo.run.remote(message)), repeats)
    ray_empty = median_ms(lambda: ray.get(echo.run.remote(empty)), repeats)
    return {
        "payload_mib": mib,
        "batch": batch,
        "encode_ms": median_ms(lambda: encode(packet), repeats),
        "flower_objects_ms": median_ms(lambda: serialized_objects(content), repeats),
        "ray_round_trip_ms": ray_full - ray_empty,
        "ray_empty_call_ms": ray_empty,
        "decode_validate_ms": median_ms(lambda: decode(content, specs), repeats),
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        echo = _Echo.remote()
        rows = [measure(mib, args.repeats, echo) for mib in PAYLOADS_MIB]
    finally:
        ray.shutdown()
    pickup = {
        "pickup_wait_ms_poll": pickup_wait_ms(vce_api.add_messages_to_queue, args.repeats),
        "pickup_wait_ms_push": pickup_wait_ms(add_messages_on_push, args.repeats),
    }
    for row in rows:
        row |= pickup
    print(write_results("message_breakdown", rows, {"torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
