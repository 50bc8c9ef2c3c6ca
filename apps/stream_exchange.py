"""The ``stream`` transport's exchange: a round's training traffic on the data plane.

``RoundDriver`` talks to one exchange (``send`` a packet of a ``MessageKind`` to a node,
``receive`` its reply), whichever transport runs. Here the first training request of a
node's round goes as a Flower message, carrying a ``Ticket``; the node's ClientApp dials the
ServerApp's ``DataPlaneServer`` and keeps its slice, optimizer and graph in memory for the
round, and every further request and upload of that round is a frame on its stream. When the
node's "done" upload arrives, its Flower reply (the round message's, sent once the ClientApp
has saved its state) is collected before the driver goes on, so a node never has two
messages in flight. Hello, sync and evaluation stay Flower messages (``Exchange``).

The ledger counts frames as it counts messages: tensor bytes per kind, and everything else
(prefix, header, padding, the round message's control records) as control.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flwr.serverapp import Grid

from flsplit.config import RunConfig
from flsplit.dataplane import FALLBACK, Connection, DataPlaneError, DataPlaneServer, StreamClosed
from flsplit.ledger import Ledger
from flsplit.protocol import MessageKind
from flsplit.wire import Packet, PayloadError, TensorSpec
from apps import simulation_runtime
from apps.exchange import Exchange, Reply

#: How often the server checks, while a node has not dialled in yet, whether its round message failed.
DIAL_POLL_S = 0.02


@dataclass
class _Stream:
    """A node's round on the data plane: its connection (once admitted), and the last request's clock."""

    connection: Connection | None = None
    sent_at: float = 0.0
    busy_at: float = 0.0


class StreamExchange:
    """``Exchange``'s interface, with ``STEP`` traffic on each node's stream for the round."""

    def __init__(self, messages: Exchange, plane: DataPlaneServer, handshake_timeout_s: float) -> None:
        self.messages, self.plane, self.handshake_timeout_s = messages, plane, handshake_timeout_s
        self.ledger = messages.ledger
        self._streams: dict[int, _Stream] = {}

    @property
    def client_index(self) -> dict[int, int]:
        return self.messages.client_index

    @client_index.setter
    def client_index(self, index: dict[int, int]) -> None:
        self.messages.client_index = index

    def __enter__(self) -> StreamExchange:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.plane.close()
        self.messages.close()

    def check_capacity(self, clients: Sequence[object], served_at_once: int) -> None:
        """Refuse, before training, a round that needs more ClientApps open at once than simulation runs.

        On the stream a client's round holds its Ray worker from its first request to its last
        upload, so serving ``served_at_once`` clients together needs that many workers; with
        fewer, the server would wait for a client that cannot start. (On SuperNodes every node
        runs its own ClientApp, so there is no such limit.)
        """
        resources = [getattr(c, "worker_resources", {}) for c in clients]
        if not resources or not all(resources):
            return
        worst = max(resources, key=lambda r: (r.get("worker_cpus", 0.0), r.get("worker_gpus", 0.0)))
        workers = simulation_runtime.concurrent_workers(worst.get("worker_cpus", 0.0), worst.get("worker_gpus", 0.0))
        if served_at_once > workers:
            raise DataPlaneError(
                f"transport='stream' serves {served_at_once} clients at once here, but the simulation runs {workers} "
                f"ClientApp(s) at a time ({worst.get('worker_cpus', 0):g} CPUs each): give each client fewer CPUs "
                f"(--federation-config \"client-resources-num-cpus=...\"), set serve-order='sequential', or {FALLBACK}"
            )

    def send(self, node_id: int, kind: MessageKind, packet: Packet) -> None:
        """A request on the node's stream, or its round message with a ticket, or any other Flower message."""
        stream = self._streams.get(node_id)
        if kind is not MessageKind.STEP:
            self.messages.send(node_id, kind, packet)
            return
        if stream is None:  # the round's first request: the ticket rides on the Flower message
            ticket = self.plane.ticket(node_id, int(packet.info["round"]))  # type: ignore[arg-type]
            self._streams[node_id] = stream = _Stream()
            self.messages.send(node_id, kind, Packet(packet.tensors, packet.info | ticket.as_info()))
        elif stream.connection is not None:
            sent = stream.connection.send(packet, self.messages.wire_dtype)
            self.ledger.count_sizes(self.client_index[node_id], "down", sent.sizes, kind.phase)
        else:
            raise RuntimeError(f"node {node_id} has not dialled in; its next request waits for its first upload")
        stream.sent_at, stream.busy_at = time.perf_counter(), self.messages.busy_clock()

    def receive(self, node_id: int, specs: Sequence[TensorSpec], same_batch: bool = True) -> Reply:
        """The node's next upload from its stream (or a Flower reply, off the stream)."""
        stream = self._streams.get(node_id)
        if stream is None:
            return self.messages.receive(node_id, specs, same_batch)
        try:
            connection = stream.connection or self._admitted(node_id, stream)
            packet, frame = connection.receive(specs, same_batch, self.messages.wire_dtype)
        except (DataPlaneError, PayloadError) as err:
            return self._fail(node_id, err)
        self.ledger.count_sizes(self.client_index[node_id], "up", frame.sent.sizes, MessageKind.STEP.phase)
        reply = Reply(node_id, None, packet, None, time.perf_counter() - stream.sent_at, self.messages.busy_clock() - stream.busy_at)
        if packet.info.get("done"):
            return self._end_round(node_id, reply)
        return reply

    def replied(self, node_id: int) -> bool:
        """Whether ``receive(node_id)`` would return at once (an upload, or the node's failure): ``Exchange.replied`` on the stream."""
        stream = self._streams.get(node_id)
        if stream is None:
            return self.messages.replied(node_id)
        if stream.connection is None:
            try:
                stream.connection = self.plane.connection(node_id, timeout_s=0)
            except DataPlaneError:
                return self.messages.replied(node_id)  # its round message failed before it dialled in
        return stream.connection.readable()

    def abandon(self, node_id: int) -> None:
        """Drop the node from the round: close its stream, void its tickets, forget its round message."""
        stream = self._streams.pop(node_id, None)
        if stream is not None and stream.connection is not None:
            stream.connection.close("the server dropped this client from the round")
        self.plane.revoke(node_id)
        self.messages.abandon(node_id)

    def _admitted(self, node_id: int, stream: _Stream) -> Connection:
        """Wait for the node to dial in; a failed round message (e.g. it could not connect) ends the wait."""
        deadline = time.monotonic() + self.handshake_timeout_s
        while True:
            try:
                stream.connection = self.plane.connection(node_id, timeout_s=DIAL_POLL_S)
                return stream.connection
            except DataPlaneError:
                if self.messages.replied(node_id):
                    failed = self.messages.receive(node_id, [])
                    raise DataPlaneError(failed.error or "the client ended its round without dialling in") from None
                if time.monotonic() > deadline:
                    raise DataPlaneError(
                        f"data plane: node {node_id} did not connect to {self.plane.address} within "
                        f"{self.handshake_timeout_s:g} s (stream-handshake-timeout); in simulation, more clients "
                        "may be served at once than Ray has workers (see docs/design.md, 'Two planes')"
                    ) from None

    def _end_round(self, node_id: int, done: Reply) -> Reply:
        """Close the node's stream and collect its round message's reply (its state is saved by then)."""
        stream = self._streams.pop(node_id)
        stream.connection.close()  # type: ignore[union-attr]
        self.plane.revoke(node_id)
        summary = self.messages.receive(node_id, [])
        if summary.packet is None:
            return Reply(node_id, summary.message, None, summary.error, done.round_trip_s, done.server_busy_s)
        return done

    def _fail(self, node_id: int, err: Exception) -> Reply:
        reason = f"client error: {err}" if isinstance(err, StreamClosed) else f"bad payload: {err}" if isinstance(err, PayloadError) else str(err)
        stream = self._streams.get(node_id)
        waited = time.perf_counter() - stream.sent_at if stream else 0.0
        self.abandon(node_id)
        return Reply(node_id, None, None, reason, waited)


def open_exchange(grid: Grid, ledger: Ledger, index: dict[int, int], config: RunConfig, busy: Callable[[], float]) -> Exchange | StreamExchange:
    """The exchange ``transport`` names: Flower messages only, or messages plus the data plane.

    In simulation the data plane listens on loopback without TLS (nothing leaves the host);
    on SuperNodes it binds ``stream-listen`` (default every interface, any free port) with a
    per-run certificate unless ``stream-tls = "off"``.
    """
    messages = Exchange(
        grid, ledger, index, timeout_s=config.message_timeout, wire_dtype=config.wire_dtype, eval_wire_dtype=config.eval_wire, busy_clock=busy
    )
    if config.transport == "messages":
        return messages
    simulated = simulation_runtime.in_simulation_runtime()
    listen = config.stream_listen or ("127.0.0.1:0" if simulated else "0.0.0.0:0")
    tls = config.stream_tls == "on" or (config.stream_tls == "auto" and not simulated)
    try:
        plane = DataPlaneServer(
            listen, config.stream_advertise, tls, int(config.max_frame_mb * (1 << 20)), config.stream_handshake_timeout, config.message_timeout
        )
    except DataPlaneError:
        messages.close()
        raise
    return StreamExchange(messages, plane, config.stream_handshake_timeout)
