"""flsplit's wire protocol as types: the message kinds, and the control fields of each message.

Every message the ServerApp sends is a ``MessageKind``; the ClientApp registers one handler
per kind, and the ledger files its bytes (both directions) under the kind's phase. The
control fields that the apps put in a ``Packet``'s ``info`` are ``Record`` dataclasses, one
per message, so each key is written once. (A strategy's own keys, such as ``batch_sizes``
or ``done`` in its uploads, are the strategy's; the stream's frames are ``flsplit.frames``
types and its ticket is ``flsplit.dataplane.Ticket``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from typing import Any, Self, get_args, get_type_hints

from flsplit.wire import PayloadError


class MessageKind(Enum):
    """A Flower message type and the ledger phase of its traffic."""

    HELLO = ("query.hello", "setup")  # who are you, how much data; restore a checkpoint
    STEP = ("train.step", "train")  # one training exchange: what came down, the next upload
    SYNC = ("train.sync", "train")  # upload the modules the strategy averages
    RELAY_FETCH = ("train.sync", "relay")  # the same upload, of a slice that goes to the next client
    RELAY = ("train.relay", "relay")  # the previous client's slice down: continue from it
    EVALUATE = ("evaluate", "eval")  # aggregated weights down, test-split activations up

    def __init__(self, message_type: str, phase: str) -> None:
        self.message_type = message_type
        self.phase = phase


class Record:
    """A message's control fields as a dataclass: each key is written once, as a field name.

    ``as_info`` gives the ``Packet.info`` dict (``None`` fields left out); ``of`` reads one
    back, converting each value to its field's type, so a reply missing a required field or
    carrying one of the wrong type is a ``PayloadError`` naming the key, never a silent zero.
    """

    def as_info(self) -> dict[str, Any]:
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}  # type: ignore[arg-type]

    @classmethod
    def of(cls, info: Mapping[str, object]) -> Self:
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in info:
                if f.default is MISSING:
                    raise PayloadError(f"info.{f.name}: missing from a {cls.__name__}")
                continue
            values[f.name] = _converted(f.name, info[f.name], hints[f.name])
        return cls(**values)


def _converted(key: str, value: object, hint: object) -> object:
    """``value`` as the scalar type ``hint`` names (``T | None`` admits ``None``)."""
    if value is None and type(None) in get_args(hint):
        return None
    kind = next((k for k in get_args(hint) if k is not type(None)), hint)
    if kind is bool and not isinstance(value, bool):
        raise PayloadError(f"info.{key}: expected true or false, got {value!r}")
    try:
        return kind(value)  # type: ignore[operator]
    except (TypeError, ValueError):
        raise PayloadError(f"info.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}") from None


@dataclass(frozen=True)
class HelloRequest(Record):
    """The server's greeting: where client checkpoints go, and the round to restore, if resuming."""

    clients_dir: str | None = None  # None: the node writes no checkpoints (the in-process tests of a round)
    restore_round: int | None = None


@dataclass(frozen=True)
class HelloReply(Record):
    """Who a node is, how much data it holds, and what it runs on (``flsplit.software``)."""

    partition_id: int
    num_partitions: int
    num_examples: int
    batches_per_round: int  # the batches it trains on per round (the progress lines' total)
    nice: int  # the ClientApp process's niceness (Ray's workers: 15 unless told otherwise)
    threads: int
    cut_blocks: int | None = None  # its own cut (node config, or ``cuts``); None: an older client, the run's
    activation_shape: str | None = None  # "16,32,32": what its slice outputs at that cut, checked by the server
    slowdown: float = 1.0  # a simulated slow device: its compute takes this many times as long (flsplit.slowdown)
    worker_cpus: float | None = None  # in simulation: what Ray reserved for it
    worker_gpus: float | None = None
    python_executable: str = ""
    flsplit_version: str = ""
    flsplit_path: str = ""
    flwr_version: str = ""
    torch_version: str = ""

    def software(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SOFTWARE_FIELDS if getattr(self, name)}

    def worker_resources(self) -> dict[str, float]:
        return {name: value for name in ("worker_cpus", "worker_gpus") if (value := getattr(self, name)) is not None}


#: The fields of ``HelloReply`` that ``flsplit.software.software`` fills.
SOFTWARE_FIELDS = ("python_executable", "flsplit_version", "flsplit_path", "flwr_version", "torch_version")


@dataclass(frozen=True)
class RoundTag(Record):
    """What the app adds to every training and sync request: the round it belongs to."""

    round: int


@dataclass(frozen=True)
class UploadTimings(Record):
    """What the ClientApp adds to every training upload: its clock, memory and progress."""

    fwd_s: float
    bwd_s: float
    handler_s: float  # from the request's arrival to the upload's
    peak_rss_mb: float  # the whole process's resident peak
    round_batches: int | None = None  # batches trained so far this round (the server's progress lines)
    slowdown_s: float = 0.0  # slept to simulate a slow device (flsplit.slowdown), not compute
    memory_peak_bytes: int | None = None  # set on the run's first ``memory-probe`` uploads (flsplit.memory)
    memory_saved_bytes: int | None = None
    memory_cuda_peak_bytes: int | None = None


@dataclass(frozen=True)
class CloseRound(Record):
    """Set on an asynchronous round's last request to a client still training: stop, and reply "done" at once."""

    close_round: bool = False


@dataclass(frozen=True)
class RoundSummary(Record):
    """The reply to a round's message on the stream transport, once the round is over."""

    uploads: int
    round_handler_s: float


@dataclass(frozen=True)
class EvaluateRequest(Record):
    """Aggregated weights (as tensors) come with it; then checkpoint, and score the test split from ``offset``."""

    offset: int = 0
    evaluate: bool = True  # False: load the weights and checkpoint only (a client that does not score)
    checkpoint_round: int | None = None


@dataclass(frozen=True)
class EvaluateChunk(Record):
    """A chunk of the test split's activations (as tensors) and where the next chunk starts."""

    done: bool
    next_offset: int = 0
    aux_correct: int = 0  # the client's auxiliary head's correct predictions on the chunk
    aux_loss_sum: float = 0.0
    handler_s: float = 0.0


@dataclass(frozen=True)
class HeadRequest(Record):
    """A U-shaped split's ``z2`` of a test chunk (as tensors), for the client's head; where that chunk starts."""

    head_offset: int


@dataclass(frozen=True)
class HeadScore(Record):
    """What a U-shaped client's head reports on a test chunk: counts only, no label."""

    correct: int
    loss_sum: float
    samples: int


@dataclass(frozen=True)
class Done(Record):
    """A reply with nothing to report but that the request was carried out."""

    done: bool = True
