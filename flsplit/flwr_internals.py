"""The few flwr internals flsplit touches, in one version-checked place.

Flower's public API has no way to measure the bytes it ships for a record, to give a message
built outside a Flower runtime an id, or to run a handler as a given task; flsplit needs the
first in its ledger and the other two to drive ClientApp handlers in process (unit tests, the
cache benchmark). Everything here is written against flwr 1.41 and refuses any other version,
so an upgrade fails loudly here instead of silently miscounting elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import flwr
from flwr.app import Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

SUPPORTED_VERSIONS = ("1.41.",)


class FlowerChangedError(RuntimeError):
    """The installed flwr is not the one these internals were written against."""


def check_version(version: str = flwr.__version__) -> None:
    """Raise ``FlowerChangedError`` unless ``version`` is one this module was written for."""
    if not version.startswith(SUPPORTED_VERSIONS):
        raise FlowerChangedError(
            f"flsplit.flwr_internals was written for flwr {SUPPORTED_VERSIONS}, not {version}; "
            "check get_all_nested_objects, Message metadata and TaskIdentity against the new flwr"
        )


check_version()


def serialized_objects(content: RecordDict) -> list[bytes]:
    """The unique objects Flower ships for ``content``, deflated (what goes on the wire)."""
    return [obj.deflate() for obj in get_all_nested_objects(content).values()]


def stamp(message: Message, message_id: str | None = None, message_type: str | None = None) -> Message:
    """Give a message built outside a Flower runtime an id (or a different type), as the runtime would."""
    if message_id is not None:
        message.metadata.__dict__["_message_id"] = message_id
    if message_type is not None:
        message.metadata.__dict__["_message_type"] = message_type
    return message


@contextmanager
def as_task(task_id: int, run_id: int, node_id: int) -> Iterator[None]:
    """Run ClientApp handlers in this process as if Flower ran them for this task."""
    names = ("_task_id", "_run_id", "_node_id")
    saved = [getattr(TaskIdentity, name, None) for name in names]
    for name, value in zip(names, (task_id, run_id, node_id)):
        setattr(TaskIdentity, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(TaskIdentity, name, value)
