"""Bad frames on the stream transport: the sender is dropped with a named reason, the top slice is untouched, the others are served.

The server side is the real ``RoundDriver`` over a ``StreamExchange`` and a real
``DataPlaneServer`` on loopback; the clients are handlers run in threads by a Grid stand-in,
so a handler can hold its round open as a Ray worker or a ClientApp process does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest
import torch
from flwr.app import Context, Message

from flsplit.aggregation import build_aggregator
from flsplit.config import parse_run_config
from flsplit.dataplane import DataPlaneServer, Ticket, dial
from flsplit.frames import FrameType, write_frame
from flsplit.ledger import Ledger
from flsplit.optim import build_optimizer
from flsplit.protocol import HelloReply, HelloRequest
from flsplit.split import build_halves
from flsplit.wire import Packet, decode, encode
from tests.in_process_grid import InProcessGrid
from tests.test_reliability import EXPECTED as MESSAGE_PATH_REASONS
from strategies import ServerHalf, get_strategy
from apps import client_app, rounds
from apps.exchange import Exchange
from apps.stream_exchange import StreamExchange

pytestmark = pytest.mark.usefixtures("task_identity")  # messages built outside a Flower runtime

RAW = {"dataset": "synthetic", "model": "resnet20", "cut": 2, "batch-size": 16, "max-batches": 3, "strategy": "dsl", "transport": "stream"}
CONFIG = parse_run_config(RAW)
Z_SHAPE = (16, 32, 32)


def _threaded(handler: Callable[[Message, Context], Message], grid: InProcessGrid) -> Callable[[Message, Context], None]:
    """``handler`` run in a thread; its reply is stored under the message's id when it returns."""

    def start(message: Message, context: Context) -> None:
        def run() -> None:
            reply = handler(message, context)
            grid._replies[message.metadata.message_id] = reply  # noqa: SLF001 - the stand-in's own store

        threading.Thread(target=run, daemon=True).start()

    return start


def _z(n: int = 16, fill: float | None = None, shape: tuple[int, ...] = Z_SHAPE) -> torch.Tensor:
    return torch.randn(n, *shape) if fill is None else torch.full((n, *shape), fill)


def _upload(z: torch.Tensor | None = None, y: torch.Tensor | None = None, **info: object) -> Packet:
    tensors = {"activations": {"z": _z() if z is None else z}}
    if y is not False:  # type: ignore[comparison-overlap]
        tensors["labels"] = {"y": torch.arange(16) % 10 if y is None else y}
    return Packet(tensors, {"done": True, "batch_sizes": [16]} | info)  # type: ignore[arg-type]


BAD: dict[str, tuple[Callable[[], Packet], str]] = {
    "missing key": (lambda: _upload(y=False), "fp32"),  # type: ignore[arg-type]
    "wrong dtype": (lambda: _upload(), "fp16"),
    "wrong shape for the cut": (lambda: _upload(z=_z(shape=(32, 16, 16))), "fp32"),
    "NaN": (lambda: _upload(z=_z(fill=float("nan"))), "fp32"),
    "Inf": (lambda: _upload(z=_z(fill=float("-inf"))), "fp32"),
    "label out of range": (lambda: _upload(y=torch.full((16,), 10)), "fp32"),
    "batch-size mismatch": (lambda: _upload(y=torch.zeros(15, dtype=torch.int64)), "fp32"),
    "batch sizes disagree with samples": (lambda: _upload(batch_sizes=[8, 4]), "fp32"),
    "truncated bytes": (lambda: _upload(), "truncate"),
}
#: The message path's reasons (tests/test_reliability.py), but a cut-off frame names its truncation.
EXPECTED = {kind: reason for kind, reason in MESSAGE_PATH_REASONS.items() if kind in BAD} | {"truncated bytes": "truncated"}


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, data: bytes | memoryview) -> None:
        self.data += bytes(data)


def _adversary(kind: str) -> Callable[[Message, Context], Message]:
    """Greets as partition 1, then sends one bad frame on its stream."""

    def handler(message: Message, context: Context) -> Message:
        if message.metadata.message_type == "query.hello":
            return Message(encode(Packet(info=HelloReply(partition_id=1, num_partitions=2, num_examples=48, batches_per_round=3, nice=0, threads=1).as_info())), reply_to=message)
        request = decode(message.content, [])
        connection = dial(Ticket.from_info(request.info), context.node_id, 5, 1 << 26, 5)
        packet_fn, wire = BAD[kind]
        if wire == "truncate":
            buffer = _Buffer()
            write_frame(buffer, FrameType.PACKET, packet_fn())
            connection.sock.sendall(bytes(buffer.data[:-999]))
            connection.sock.close()
        else:
            write_frame(connection.sock, FrameType.PACKET, packet_fn(), wire)
            connection.finish()
        return Message(encode(Packet(info={})), reply_to=message)

    return handler


def _honest(message: Message, context: Context) -> Message:
    return {"query.hello": client_app.hello, "train.step": client_app.train_step}[message.metadata.message_type](message, context)


def _server() -> ServerHalf:
    _, top, _ = build_halves(CONFIG)
    return get_strategy("dsl").server(top, build_optimizer(list(top.parameters()), CONFIG), CONFIG)


def _round(handlers: dict[int, Callable[[Message, Context], Message]]) -> tuple[rounds.RoundStats, ServerHalf, list[torch.Tensor]]:
    grid = InProcessGrid(dict.fromkeys(handlers), RAW)  # contexts per node; the handlers need the grid
    grid.handlers = {node: _route(h, grid) for node, h in handlers.items()}
    index = {node: i for i, node in enumerate(handlers)}
    with StreamExchange(Exchange(grid, Ledger(), index, timeout_s=10), DataPlaneServer(tls=False), handshake_timeout_s=10) as exchange:
        clients = rounds.hello(exchange, list(handlers), HelloRequest(), CONFIG)
        server = _server()
        before = [p.detach().clone() for p in server.top.parameters()]
        stats = rounds.RoundDriver(exchange, server, get_strategy("dsl"), clients, CONFIG, build_aggregator("FedAvg")).train(1)
    return stats, server, before


def _route(handler: Callable[[Message, Context], Message], grid: InProcessGrid) -> Callable[[Message, Context], Message | None]:
    """Hello answered at once; training messages run in a thread (they hold the round open)."""
    threaded = _threaded(handler, grid)

    def route(message: Message, context: Context) -> Message | None:
        if message.metadata.message_type == "query.hello":
            return handler(message, context)
        threaded(message, context)
        return None

    return route


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_bad_frame_drops_its_client_with_the_reason_and_leaves_the_top_slice_unchanged(kind: str) -> None:
    # Execute: one adversarial client only
    stats, server, before = _round({101: _adversary(kind)})
    # Assert
    assert list(stats.failures) == [1]
    assert re.search(EXPECTED[kind], stats.failures[1]), stats.failures[1]
    assert all(torch.equal(b, p) for b, p in zip(before, server.top.parameters()))


def test_the_other_client_is_served_in_full_when_one_streams_garbage() -> None:
    # Execute: an honest client (partition 0, the real ClientApp handlers) and an adversary
    stats, server, before = _round({100: _honest, 101: _adversary("NaN")})
    # Assert
    assert list(stats.failures) == [1] and "NaN" in stats.failures[1]
    assert stats.samples == 48  # all three batches of the honest client were served
    assert any(not torch.equal(b, p) for b, p in zip(before, server.top.parameters()))
