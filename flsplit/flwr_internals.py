"""The flwr internals flsplit touches, and the one version guard and failure policy of its patches.

Flower's public API has no way to measure the bytes it ships for a record, to give a message
built outside a Flower runtime an id, or to run a handler as a given task; flsplit needs the
first in its ledger and the other two to drive ClientApp handlers in process (unit tests, the
cache benchmark). The speed patches (``apps.fast_pull``, ``apps.fast_supernode``,
``apps.simulation_runtime``, ``apps.warm_superexec``) were written against the flwr versions in
``SUPPORTED_VERSIONS``. Their policy on any other flwr is the same: warn once and step aside
(``step_aside``), so flsplit runs as Flower ships, slower but correct; importing flsplit never
fails because of the flwr version.

What each patch still buys once per-batch traffic is on the stream (re-measured 2026-12-07,
``experiments/results/deployment_latency_patches.md`` and ``bench_stream_patches.md``): the warm
SuperExec saves ~10 s of a CSL round's training and ~12 s of its evaluation on 2 SuperNodes
(each remaining message would otherwise start a ClientApp process); the short SuperNode polls,
the fast object pull and simulation's pickup on push show no gain there beyond the noise. All
four stay, because ``messages`` is the default transport and there each was measured to buy its
share of the per-batch round trip (``docs/deploy.md``, ``experiments/results/bench.md``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from logging import WARNING

import flwr
from flwr.app import Message, RecordDict
from flwr.common.logger import log

#: The flwr releases whose internals the patches and helpers here were checked against.
SUPPORTED_VERSIONS = ("1.41.", "1.42.")


class FlowerChangedError(RuntimeError):
    """The installed flwr is not one the patches were written against, or the code they patch changed."""


def check_version(what: str, version: str | None = None) -> None:
    """Raise ``FlowerChangedError`` naming ``what`` unless flwr ``version`` (default: installed) is supported."""
    version = flwr.__version__ if version is None else version
    if not version.startswith(SUPPORTED_VERSIONS):
        raise FlowerChangedError(f"{what} supports flwr {', '.join(v + 'x' for v in SUPPORTED_VERSIONS)}, found {version}")


def step_aside(what: str, err: Exception) -> None:
    """The failure policy of every patch: say that ``what`` is off and why, and go on without it."""
    message = f"flsplit: {what} is off, running as flwr ships ({err})"
    log(WARNING, "%s", message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


try:  # internals: the ledger and the in-process test harness use them, nothing else
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.task_identity import TaskIdentity
except ImportError as _missing:  # an unknown flwr: count bytes through the public API instead
    get_all_nested_objects = None
    TaskIdentity = None
    step_aside("exact wire-byte counting", _missing)


def serialized_objects(content: RecordDict) -> list[bytes]:
    """The unique objects Flower ships for ``content``, deflated (what goes on the wire).

    Where flwr's object tree is not importable, each array's bytes stand in for it: the
    payload is counted, the few hundred bytes of framing per record are not.
    """
    if get_all_nested_objects is not None:
        return [obj.deflate() for obj in get_all_nested_objects(content).values()]
    return [array.data for record in content.array_records.values() for array in record.values()]


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
    if TaskIdentity is None:
        raise FlowerChangedError(f"flwr {flwr.__version__} has no TaskIdentity; in-process ClientApp handlers need flwr 1.41 or 1.42")
    names = ("_task_id", "_run_id", "_node_id")
    saved = [getattr(TaskIdentity, name, None) for name in names]
    for name, value in zip(names, (task_id, run_id, node_id)):
        setattr(TaskIdentity, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved):
            setattr(TaskIdentity, name, value)
