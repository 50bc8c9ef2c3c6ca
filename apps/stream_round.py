"""The ClientApp's side of the ``stream`` transport: one Flower message, a whole round on the data plane.

The round's training message carries the first request and a ``Ticket``. The handler dials
the ServerApp, then repeats what one ``train.step`` message does on the message transport
(apply the request, train, upload) with every further request read from its stream, until
its upload says "done". The slice, its optimizer and, for CSL, the autograd graph stay in
this process for the whole round: nothing is restored or replayed per batch, and the caller
saves the slice into ``context.state`` once, after the round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from flsplit.config import RunConfig
from flsplit.dataplane import Ticket, dial
from flsplit.protocol import RoundSummary
from flsplit.wire import Packet, TensorSpec

MiB = 1 << 20


def serve_round(
    first: Packet,
    ticket: Ticket,
    node_id: int,
    config: RunConfig,
    specs: Sequence[TensorSpec],
    train_once: Callable[[Packet, float], Packet],
    on_device: Callable[[Packet], Packet],
) -> RoundSummary:
    """Serve the round over the data plane; return what the round message's reply reports.

    ``train_once(request, received_at)`` is the message transport's step (apply, train,
    upload); ``on_device`` moves a validated request to the slice's device.
    """
    started = time.perf_counter()
    connection = dial(ticket, node_id, config.stream_handshake_timeout, int(config.max_frame_mb * MiB), config.message_timeout)
    uploads, request, received_at = 0, first, started
    try:
        while True:
            upload = train_once(request, received_at)
            connection.send(upload, config.wire_dtype)
            uploads += 1
            if upload.info.get("done"):
                break
            received, _ = connection.receive(specs, wire_dtype=config.wire_dtype)
            received_at = time.perf_counter()
            request = on_device(received)
    except BaseException as err:
        connection.close(f"{type(err).__name__}: {err}")  # the server learns why at once, not at a timeout
        raise
    connection.finish()  # the server closes once it has read "done"
    return RoundSummary(uploads=uploads, round_handler_s=time.perf_counter() - started)
