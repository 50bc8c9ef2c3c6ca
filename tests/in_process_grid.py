"""A Grid stand-in for unit tests: delivers each message to a Python handler in this process.

With ``through_protobuf=True`` every message, every reply and each node's ``Context`` go through
Flower's own protobuf serialization (``flwr.common.serde``) on the way, as they do between the
processes of a real run: a record Flower cannot carry fails here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.common import serde
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

from flsplit.flwr_internals import stamp
from flsplit.results import read_metrics
from apps import client_app, client_state, server_app

Handler = Callable[[Message, Context], Message]


class InProcessGrid:
    """Implements the part of ``flwr.serverapp.Grid`` the exchange uses, with no SuperLink."""

    def __init__(self, handlers: dict[int, Handler], run_config: dict, through_protobuf: bool = False) -> None:
        self.handlers = handlers
        self.through_protobuf = through_protobuf
        self.contexts = {
            node_id: Context(
                run_id=1,
                node_id=node_id,
                node_config={"partition-id": i, "num-partitions": len(handlers)},
                state=RecordDict(),
                run_config=run_config,
            )
            for i, node_id in enumerate(handlers)
        }
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.handlers)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            stamp(message, message_id=uuid.uuid4().hex)
            node_id = message.metadata.dst_node_id
            if self.through_protobuf:
                message, self.contexts[node_id] = _over_the_wire(message), _context_over_the_wire(self.contexts[node_id])
            reply = self.handlers[node_id](message, self.contexts[node_id])
            if reply is not None:  # a handler returning None plays a client that never answers
                self._replies[message.metadata.message_id] = _over_the_wire(reply) if self.through_protobuf else reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]


def _over_the_wire(message: Message) -> Message:
    """The message as the receiving process gets it: serialized to bytes and parsed back."""
    proto = ProtoMessage.FromString(serde.message_to_proto(message).SerializeToString())
    return serde.message_from_proto(proto)


def _context_over_the_wire(context: Context) -> Context:
    return serde.context_from_proto(ProtoContext.FromString(serde.context_to_proto(context).SerializeToString()))


#: The ClientApp's handlers by message type, as Flower routes them.
HANDLERS: dict[str, Handler] = {
    "query.hello": client_app.hello,
    "train.step": client_app.train_step,
    "train.sync": client_app.sync,
    "train.relay": client_app.relay,
    "evaluate": client_app.evaluate,
}


def run_server_app(
    run_config: dict,
    results: Path,
    fresh_process: bool = False,
    through_protobuf: bool = False,
    observe: Callable[[Message], None] = lambda message: None,
) -> list[dict]:
    """The real ServerApp ``main`` against two ClientApps in this process; the run's metrics.

    ``run_config`` holds Python values (``results-dir`` and ``run-name`` are set here from
    ``results`` and ``run-name``). ``fresh_process`` drops the ClientApp's live objects before
    every message, as a process per message (deployment) does; otherwise they are reused between
    messages, as Ray workers do. ``observe`` sees every message the server sends, in order.
    Call it with the ``task_identity`` fixture active.
    """
    run_config = run_config | {"results-dir": str(results)}

    def handler(message: Message, context: Context) -> Message:
        observe(message)
        if fresh_process:
            client_state.drop_cached_slices()
        return HANDLERS[message.metadata.message_type](message, context)

    client_state.drop_cached_slices()  # nothing live from an earlier run with the same node IDs
    grid = InProcessGrid({101: handler, 102: handler}, run_config, through_protobuf=through_protobuf)
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return read_metrics(results / str(run_config["run-name"]) / "metrics.jsonl")
