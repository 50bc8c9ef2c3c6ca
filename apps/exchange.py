"""Message transport for the per-batch path: push, poll, decode, count bytes.

``grid.send_and_receive`` sleeps 0.1 s (simulation) or 3 s (deployment) between pulls, which
would dominate a per-batch round trip. The exchange instead pushes one message at a time per
node (two in flight for one node could race on the node's state) and polls the SuperLink
every few milliseconds for the one reply the server is waiting for. Other replies stay in the
SuperLink until their turn, so the server holds one payload at a time however many clients
there are, and the order in which it consumes replies does not depend on arrival times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flwr.app import Message
from flwr.serverapp import Grid

from flsplit import trace
from flsplit.ledger import Ledger
from flsplit.protocol import MessageKind
from flsplit.wire import Packet, PayloadError, TensorSpec, decode, encode


@dataclass
class Reply:
    """A node's reply: the decoded packet, or the reason it could not be used."""

    node_id: int
    message: Message | None
    packet: Packet | None
    error: str | None
    round_trip_s: float
    server_busy_s: float = 0.0  # server compute while this message was out (see ``busy_clock``)


#: How Flower's simulation wraps a ClientApp's exception: a Ray traceback, then this, then the message.
RAY_WRAPPED = "occurred. Message: "


def client_reason(reason: str) -> str:
    """A ClientApp's error as its own exception said it, without the Ray traceback around it in simulation."""
    if RAY_WRAPPED not in reason:
        return reason
    return reason.rsplit(RAY_WRAPPED, 1)[1].strip().removesuffix("'>")


class _TooLargeWatch(logging.Filter):
    """Notices Flower's log line for an HTTP 413 on pull, which it otherwise reports as 'no reply'.

    We pull one reply at a time, so a 413 means that reply itself is too large to fetch.
    """

    MARKER = "[Grid.pull_messages] HTTP payload too large"

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.MARKER in record.getMessage():
            self.seen = True
        return True


class Exchange:
    """Keeps at most one message in flight per node and returns its reply on request.

    Use it as a context manager (or call ``close``): while open it watches Flower's log for
    HTTP 413 on pull, with a filter of its own.
    """

    def __init__(
        self,
        grid: Grid,
        ledger: Ledger,
        client_index: dict[int, int],
        poll_s: float = 0.002,
        timeout_s: float = 600.0,
        wire_dtype: str = "fp32",
        eval_wire_dtype: str = "",
        busy_clock: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.grid, self.ledger, self.client_index = grid, ledger, client_index
        self.poll_s, self.timeout_s, self.wire_dtype = poll_s, timeout_s, wire_dtype
        self.eval_wire_dtype = eval_wire_dtype or wire_dtype  # test-split activations (``eval-wire-dtype``)
        self.busy_clock = busy_clock  # seconds the server has spent computing so far
        self._in_flight: dict[str, tuple[int, float, MessageKind, float]] = {}  # id -> node, sent, kind, busy
        self._arrived: dict[int, tuple[Message, float, MessageKind, float]] = {}
        self._refused: dict[int, str] = {}  # node -> why the SuperLink did not take its message
        self._too_large = _TooLargeWatch()
        logging.getLogger("flwr").addFilter(self._too_large)

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching Flower's log."""
        logging.getLogger("flwr").removeFilter(self._too_large)

    def send(self, node_id: int, kind: MessageKind, packet: Packet) -> None:
        """Push one message to ``node_id``; its reply is collected with ``receive``.

        Its bytes, and its reply's, count in the ledger under ``kind``'s phase.
        """
        if self._message_of(node_id) is not None or node_id in self._refused:
            raise RuntimeError(f"node {node_id} already has a message in flight")
        content = encode(packet, self.wire_dtype)
        self.ledger.count(self.client_index[node_id], "down", content, kind.phase)
        message = Message(content, dst_node_id=node_id, message_type=kind.message_type)
        pushing_at = time.time()
        try:
            ids = list(self.grid.push_messages([message]))
        except Exception as err:  # noqa: BLE001 - e.g. the node went offline; reported on receive
            ids = []
            self._refused[node_id] = f"SuperLink refused the {kind.message_type} message: {err}"
        if not ids or not ids[0]:
            self._refused.setdefault(
                node_id,
                f"SuperLink refused the {kind.message_type} message (payload over its size limit, or node offline)",
            )
            return
        self._in_flight[ids[0]] = (node_id, time.perf_counter(), kind, self.busy_clock())
        trace.record("server_push", message_id=ids[0], started=pushing_at)

    def receive(self, node_id: int, specs: Sequence[TensorSpec], same_batch: bool = True) -> Reply:
        """Wait for ``node_id``'s reply and validate it against ``specs`` (if it has tensors)."""
        deadline = time.perf_counter() + self.timeout_s
        if trace.enabled() and node_id not in self._arrived and (waiting_for := self._message_of(node_id)) is not None:
            trace.record("server_wait", message_id=waiting_for)  # from here on the reply is on our critical path
        while node_id not in self._arrived:
            if node_id in self._refused:
                return Reply(node_id, None, None, self._refused.pop(node_id), 0.0)
            message_id = self._message_of(node_id)
            if message_id is None:
                raise RuntimeError(f"no message in flight for node {node_id}")
            if time.perf_counter() > deadline:
                self.abandon(node_id)
                return Reply(node_id, None, None, f"no reply within {self.timeout_s:g} s (message-timeout)", self.timeout_s)
            if not self._pull(message_id):
                time.sleep(self.poll_s)
        message, round_trip, kind, busy = self._arrived.pop(node_id)
        if message.has_error():
            return Reply(node_id, message, None, f"client error: {client_reason(message.error.reason)}", round_trip, busy)
        if message.metadata.message_type != kind.message_type:
            reason = f"bad payload: reply of type '{message.metadata.message_type}' to a '{kind.message_type}' message"
            return Reply(node_id, message, None, reason, round_trip, busy)
        self.ledger.count(self.client_index[node_id], "up", message.content, kind.phase)
        try:
            dtype = self.eval_wire_dtype if kind is MessageKind.EVALUATE else self.wire_dtype
            packet = decode(message.content, specs if message.content.array_records else [], same_batch, dtype)
        except PayloadError as err:
            return Reply(node_id, message, None, f"bad payload: {err}", round_trip, busy)
        return Reply(node_id, message, packet, None, round_trip, busy)

    def replied(self, node_id: int) -> bool:
        """Whether ``node_id``'s in-flight message has its reply (or was refused), pulling once if not."""
        if node_id in self._arrived or node_id in self._refused:
            return True
        message_id = self._message_of(node_id)
        return message_id is not None and self._pull(message_id)

    def in_flight(self, node_id: int) -> bool:
        """Whether a message to ``node_id`` awaits collection with ``receive``."""
        return self._message_of(node_id) is not None or node_id in self._arrived or node_id in self._refused

    def abandon(self, node_id: int) -> None:
        """Forget a node's in-flight message (its reply, if it ever comes, is dropped)."""
        message_id = self._message_of(node_id)
        if message_id is not None:
            del self._in_flight[message_id]
        self._arrived.pop(node_id, None)
        self._refused.pop(node_id, None)

    def _message_of(self, node_id: int) -> str | None:
        return next((mid for mid, entry in self._in_flight.items() if entry[0] == node_id), None)

    def _pull(self, message_id: str) -> bool:
        self._too_large.seen = False
        replies = list(self.grid.pull_messages([message_id]))
        node_id, sent_at, kind, busy_at_send = self._in_flight[message_id]
        if self._too_large.seen:
            del self._in_flight[message_id]
            self._refused[node_id] = f"the {kind.message_type} reply is too large for the SuperLink (HTTP 413); lower chunk-mb"
            return True
        for reply in replies:
            if reply.metadata.reply_to_message_id == message_id:
                trace.record("server_pull", message_id=message_id)
                del self._in_flight[message_id]
                busy = self.busy_clock() - busy_at_send
                self._arrived[node_id] = (reply, time.perf_counter() - sent_at, kind, busy)
                return True
        return False
