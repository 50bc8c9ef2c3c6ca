"""Tensors <-> Flower message records, with validation of everything received.

A message's content is a ``Packet``: tensors grouped by *kind* (``activations``, ``labels``,
``gradients``, ``weights``, ``aux_model``), each kind one ``ArrayRecord``, plus scalar ``info``
in a ``ConfigRecord``. Grouping by kind is what lets the ledger count each kind as its own line.
Nothing decoded reaches a model before its keys, dtype, shape, finiteness and label range
have been checked; a bad payload raises ``PayloadError`` naming the problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from torch import nn

from flsplit.compression import COMPRESSIBLE_KINDS, SCALE_SUFFIX, compress, decompress, part_dtypes
from flsplit.device import to_device, to_host
from flsplit.flwr_internals import serialized_objects

INFO = "info"
#: ``info`` entries under this prefix are a client half's own metrics (``Packet.add_metric``).
METRIC_PREFIX = "metric."
KINDS = ("activations", "labels", "gradients", "weights", "aux_model")
#: Kinds that hold one row per sample, so their first dimensions must agree within a message.
BATCH_KINDS = ("activations", "labels", "gradients")

Info = dict[str, int | float | str | bool | list[int]]


class PayloadError(ValueError):
    """A received payload is malformed; the message names the record, the key and the problem."""


@dataclass
class Packet:
    """What one message carries: tensors by kind, and scalar control information.

    Uploads carry cut-layer activations ``z`` and their labels ``y``; CSL-style replies carry
    the gradient ``dz``. Read and build those through ``activations``, ``labels``,
    ``gradients``, ``Packet.upload`` and ``Packet.gradient``, which name the tensor paths once;
    a plug-in that transforms what a parent strategy sends assigns ``activations`` or
    ``gradients`` (the labels are the data's own, so they have no setter).
    """

    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    info: Info = field(default_factory=dict)

    @classmethod
    def upload(cls, z: torch.Tensor, y: torch.Tensor, info: Info | None = None) -> Packet:
        """Activations ``z`` with their labels ``y``."""
        return cls({"activations": {"z": z}, "labels": {"y": y}}, dict(info or {}))

    @classmethod
    def gradient(cls, dz: torch.Tensor, info: Info | None = None) -> Packet:
        """The server's gradient ``dL/dz`` for the client's pending activations."""
        return cls({"gradients": {"dz": dz}}, dict(info or {}))

    def to(self, device: torch.device) -> Packet:
        """The same packet with every tensor on ``device`` (after it was validated on the CPU)."""
        moved = {kind: {name: to_device(t, device) for name, t in group.items()} for kind, group in self.tensors.items()}
        return Packet(moved, self.info)

    @property
    def has_data(self) -> bool:
        """Whether the packet carries activations (an upload with samples)."""
        return "activations" in self.tensors

    @property
    def activations(self) -> torch.Tensor:
        """The cut-layer activations ``z`` (one row per sample)."""
        return self._tensor("activations", "z")

    @activations.setter
    def activations(self, z: torch.Tensor) -> None:
        self.tensors.setdefault("activations", {})["z"] = z

    @property
    def labels(self) -> torch.Tensor:
        """The labels ``y`` of the activations."""
        return self._tensor("labels", "y")

    @property
    def gradients(self) -> torch.Tensor:
        """The gradient ``dz`` of the loss with respect to the activations."""
        return self._tensor("gradients", "dz")

    @gradients.setter
    def gradients(self, dz: torch.Tensor) -> None:
        self.tensors.setdefault("gradients", {})["dz"] = dz

    def add_metric(self, name: str, value: float) -> None:
        """Report a client-side metric: the server sums it over the round's uploads into
        ``metrics.jsonl`` as ``client.<name>`` (send a sum and a count for a mean)."""
        key = METRIC_PREFIX + name
        self.info[key] = self.info.get(key, 0) + value  # type: ignore[operator]

    @property
    def metrics(self) -> dict[str, float]:
        """The client metrics this packet carries (``add_metric``), by name; each must be a number."""
        out = {}
        for key, value in self.info.items():
            if key.startswith(METRIC_PREFIX):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise PayloadError(f"info.{key}: a client metric must be a number, got {value!r}")
                out[key.removeprefix(METRIC_PREFIX)] = float(value)
        return out

    def _tensor(self, kind: str, name: str) -> torch.Tensor:
        try:
            return self.tensors[kind][name]
        except KeyError:
            raise PayloadError(f"{kind}.{name}: missing from the packet") from None


@dataclass(frozen=True)
class TensorSpec:
    """What a received tensor must look like. ``None`` in ``shape`` matches any size."""

    kind: str
    name: str
    dtype: torch.dtype
    shape: tuple[int | None, ...]
    num_classes: int | None = None  # labels: values must lie in [0, num_classes)


def upload_specs(activation_shape: tuple[int, ...], num_classes: int) -> list[TensorSpec]:
    """What an upload carrying data must contain: float activations and labels in range."""
    return [
        TensorSpec("activations", "z", torch.float32, (None, *activation_shape)),
        TensorSpec("labels", "y", torch.int64, (None,), num_classes),
    ]


def gradient_specs(activation_shape: tuple[int, ...]) -> list[TensorSpec]:
    """What a reply carrying the server's gradient for the activations must contain."""
    return [TensorSpec("gradients", "dz", torch.float32, (None, *activation_shape))]


def encode(packet: Packet, wire_dtype: str = "fp32") -> RecordDict:
    """Build a message's ``RecordDict`` from a packet.

    Activations and gradients travel in ``wire_dtype`` (see ``flsplit.compression``); an
    int8 tensor ``z`` travels as ``z`` plus its per-channel ``z.scale``.
    """
    content = RecordDict()
    for kind, tensors in packet.tensors.items():
        if kind not in KINDS:
            raise ValueError(f"unknown payload kind '{kind}'; use one of {KINDS}")
        parts = {}
        for name, tensor in tensors.items():
            tensor = tensor.detach()  # compressed where it lives, so fewer bytes leave a GPU
            compressed = compress(tensor, wire_dtype) if kind in COMPRESSIBLE_KINDS else {"": tensor}
            parts |= {name + suffix: part for suffix, part in compressed.items()}
        content[kind] = ArrayRecord({key: Array(part.contiguous().numpy()) for key, part in to_host(parts).items()})
    content[INFO] = ConfigRecord(dict(packet.info))
    return content


def decode(
    content: RecordDict, specs: Sequence[TensorSpec], same_batch: bool = True, wire_dtype: str = "fp32"
) -> Packet:
    """Validate ``content`` against ``specs`` and return it as a packet.

    Every spec'd tensor must be present (in ``wire_dtype`` for activations and gradients), no
    other tensor may be, and with ``same_batch`` all per-sample tensors (``BATCH_KINDS``) share
    their first dimension (activations and labels of one batch).
    """
    if INFO not in content.config_records:
        raise PayloadError("payload has no 'info' record")
    expected: dict[str, dict[str, TensorSpec]] = {}
    for spec in specs:
        expected.setdefault(spec.kind, {})[spec.name] = spec
    unexpected = set(content.array_records) - set(expected)
    if unexpected:
        raise PayloadError(f"payload has unexpected records {sorted(unexpected)}")
    packet = Packet(info=dict(content.config_records[INFO]))  # type: ignore[arg-type]
    for kind, wanted in expected.items():
        record = content.array_records.get(kind)
        if record is None:
            raise PayloadError(f"payload is missing the '{kind}' record")
        lossy = kind in COMPRESSIBLE_KINDS
        suffixes = part_dtypes(wire_dtype) if lossy else {"": None}
        keys = {name + suffix for name in wanted for suffix in suffixes}
        missing, extra = keys - set(record), set(record) - keys
        if missing or extra:
            raise PayloadError(
                f"'{kind}' record: missing keys {sorted(missing)}, unexpected keys {sorted(extra)}"
            )
        if lossy:
            packet.tensors[kind] = {
                name: _decode_compressed(record, spec, wire_dtype) for name, spec in wanted.items()
            }
        else:
            packet.tensors[kind] = {name: _decode_array(record[name], spec) for name, spec in wanted.items()}
    if same_batch:
        sizes = {f"{k}.{n}": t.shape[0] for k, ts in packet.tensors.items() if k in BATCH_KINDS for n, t in ts.items()}
        if len(set(sizes.values())) > 1:
            raise PayloadError(f"batch-size mismatch between tensors: {sizes}")
    return packet


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf: one min/max pass (NaN and +-Inf fail the comparisons), no boolean tensor."""
    if not tensor.numel():
        return True
    low, high = torch.aminmax(tensor)
    return bool(low > -math.inf) and bool(high < math.inf)


def _decode_array(array: Array, spec: TensorSpec, check_finite: bool = True) -> torch.Tensor:
    where = f"'{spec.kind}.{spec.name}'"
    expected_dtype = str(torch.empty(0, dtype=spec.dtype).numpy().dtype)
    if array.dtype != expected_dtype:
        raise PayloadError(f"{where}: dtype {array.dtype}, expected {expected_dtype}")
    check_shape(where, tuple(array.shape), spec.shape)
    try:
        values = array.numpy()
    except Exception as err:  # noqa: BLE001 - truncated or corrupt bytes
        raise PayloadError(f"{where}: cannot decode the array bytes ({err})") from None
    if str(values.dtype) != expected_dtype or values.shape != tuple(array.shape):
        raise PayloadError(
            f"{where}: bytes hold {values.dtype}{list(values.shape)}, "
            f"metadata says {array.dtype}{list(array.shape)}"
        )
    tensor = torch.from_numpy(values if values.flags.writeable else values.copy())  # np.load's array is fresh
    check_values(where, tensor, spec, check_finite)
    return tensor


def check_values(where: str, tensor: torch.Tensor, spec: TensorSpec, check_finite: bool = True) -> None:
    """Refuse NaN/Inf (floating tensors, if ``check_finite``) and labels outside ``spec.num_classes``."""
    if check_finite and tensor.is_floating_point() and not all_finite(tensor):
        raise PayloadError(f"{where}: contains NaN or Inf")
    if spec.num_classes is not None and tensor.numel() and (
        int(tensor.min()) < 0 or int(tensor.max()) >= spec.num_classes
    ):
        raise PayloadError(
            f"{where}: label values span [{int(tensor.min())}, {int(tensor.max())}], "
            f"expected [0, {spec.num_classes - 1}]"
        )


def _decode_compressed(record: ArrayRecord, spec: TensorSpec, wire_dtype: str) -> torch.Tensor:
    """Decode and check each part of a (possibly) compressed tensor, then decompress it."""
    parts = {}
    for suffix, dtype in part_dtypes(wire_dtype).items():
        shape = spec.shape if suffix != SCALE_SUFFIX else (spec.shape[1],)
        part_spec = TensorSpec(spec.kind, spec.name + suffix, dtype, shape)
        parts[suffix] = _decode_array(record[spec.name + suffix], part_spec, check_finite=False)
    tensor = decompress(parts, wire_dtype)
    if not all_finite(tensor):  # once, on what the receiver uses (an int8 scale can overflow it)
        raise PayloadError(f"'{spec.kind}.{spec.name}': contains NaN or Inf after decompression")
    return tensor


def check_shape(where: str, got: tuple[int, ...], want: tuple[int | None, ...]) -> None:
    """Refuse a shape of another rank, or with a size other than a fixed one in ``want``."""
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        shown = ["*" if w is None else w for w in want]
        raise PayloadError(f"{where}: shape {list(got)}, expected {shown}")


def serialized_size(content: RecordDict | ArrayRecord | ConfigRecord) -> int:
    """Bytes Flower ships for this content: its unique deflated objects, headers included."""
    return sum(len(obj) for obj in serialized_objects(content))


# --- model weights -------------------------------------------------------------------------


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers to ship or store (BatchNorm's step counter is left out)."""
    return {
        name: value
        for name, value in module.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }


def weight_specs(modules: Mapping[str, nn.Module], kind: str = "weights") -> list[TensorSpec]:
    """Specs that a ``kind`` record of weights for ``modules`` (prefix -> module) must satisfy."""
    return [
        TensorSpec(kind, f"{prefix}.{name}", value.dtype, tuple(value.shape))
        for prefix, module in modules.items()
        for name, value in module_state(module).items()
    ]


def weights_of(modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """All weights of ``modules`` as one flat dict, keys prefixed by the module's name."""
    return {
        f"{prefix}.{name}": value
        for prefix, module in modules.items()
        for name, value in module_state(module).items()
    }


def load_weights(modules: Mapping[str, nn.Module], weights: Mapping[str, torch.Tensor]) -> None:
    """Load validated flat weights (see ``weights_of``) into ``modules``."""
    for prefix, module in modules.items():
        own = {k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(prefix + ".")}
        module.load_state_dict(own, strict=False)

