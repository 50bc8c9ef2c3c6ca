"""A Grid stand-in for unit tests: delivers each message to a Python handler in this process."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from flwr.app import Context, Message, RecordDict

from flsplit.flwr_internals import stamp

Handler = Callable[[Message, Context], Message]


class InProcessGrid:
    """Implements the part of ``flwr.serverapp.Grid`` the exchange uses, with no SuperLink."""

    def __init__(self, handlers: dict[int, Handler], run_config: dict) -> None:
        self.handlers = handlers
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
            reply = self.handlers[node_id](message, self.contexts[node_id])
            if reply is not None:  # a handler returning None plays a client that never answers
                self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]
