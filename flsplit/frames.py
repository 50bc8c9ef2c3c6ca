"""Packets as byte frames for the data plane: a Flower-free tensor <-> bytes codec.

A frame is a fixed prefix (magic, version, frame type, header and body lengths), a JSON header
(the packet's ``info`` and one descriptor per tensor part: kind, name, dtype, shape, offset,
length) and a body of raw tensor bytes, each part aligned to ``ALIGN`` bytes. Sending writes
each tensor's own buffer (no concatenation); receiving reads the body into one buffer and
views every tensor in it (no copy), so an 8 MiB activation costs one read and one write.

What arrives is checked exactly as ``flsplit.wire.decode`` checks a Flower message, with the
same ``PayloadError`` reasons: the kinds and names the specs expect and no others, dtype,
shape, a shared batch dimension, NaN/Inf and the label range. On top, a frame is refused
before it is read when it is larger than the receiver's maximum (``max-frame-mb``) or its
header does not describe its body.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import torch

from flsplit.compression import COMPRESSIBLE_KINDS, SCALE_SUFFIX, compress, decompress, part_dtypes
from flsplit.device import to_host
from flsplit.wire import BATCH_KINDS, KINDS, Packet, PayloadError, TensorSpec, all_finite, check_shape, check_values

MAGIC = b"FLSF"
VERSION = 1
#: magic, version, frame type, reserved, header bytes, body bytes (network byte order).
PREFIX = struct.Struct("!4sBBHIQ")
#: Every tensor part starts at a multiple of this in the body, so any dtype can be viewed in place.
ALIGN = 64
#: The header is JSON of a few hundred bytes per tensor; anything much larger is not ours.
MAX_HEADER_BYTES = 1 << 20

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "int16": torch.int16,
    "int8": torch.int8,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class FrameType(IntEnum):
    """What a frame carries."""

    TICKET = 1  # client -> server, first frame: the token that admits this connection
    PACKET = 2  # a ``Packet``: an upload, a request or a reply
    CLOSE = 3  # the sender ends the stream; the header says why


class ByteStream(Protocol):
    """A connected socket (plain or TLS): what frames are read from and written to."""

    def sendall(self, data: bytes | memoryview, /) -> None: ...

    def recv_into(self, buffer: memoryview, nbytes: int = 0, /) -> int: ...


@dataclass
class Frame:
    """A received frame: its type, its JSON header and its body (a uint8 tensor)."""

    type: FrameType
    header: dict
    body: torch.Tensor

    @property
    def sent(self) -> Sent:
        """Bytes this frame took on the wire, per kind (as the sender's ``write_frame`` counted them)."""
        kinds: dict[str, int] = {}
        for descriptor in self.header.get("tensors", []):
            kinds[str(descriptor[0])] = kinds.get(str(descriptor[0]), 0) + int(descriptor[5])
        total = PREFIX.size + int(self.header.get("_header_bytes", 0)) + self.body.numel()
        return Sent(kinds, total - sum(kinds.values()))


@dataclass(frozen=True)
class Sent:
    """What one frame took on the wire: tensor bytes per kind, and the rest (prefix, header, padding) as control."""

    kinds: dict[str, int]
    control: int

    @property
    def total(self) -> int:
        return sum(self.kinds.values()) + self.control

    @property
    def sizes(self) -> dict[str, int]:
        """Per ledger line: each kind, and ``control``."""
        return self.kinds | {"control": self.control}


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _parts(packet: Packet, wire_dtype: str) -> list[tuple[str, str, torch.Tensor]]:
    """``(kind, name + suffix, CPU tensor)`` for every part the packet's tensors travel as."""
    parts = []
    for kind, tensors in packet.tensors.items():
        if kind not in KINDS:
            raise ValueError(f"unknown payload kind '{kind}'; use one of {KINDS}")
        for name, tensor in tensors.items():
            tensor = tensor.detach()  # compressed where it lives, so fewer bytes leave a GPU
            compressed = compress(tensor, wire_dtype) if kind in COMPRESSIBLE_KINDS else {"": tensor}
            for suffix, part in to_host(compressed).items():
                parts.append((kind, name + suffix, part.contiguous()))
    return parts


def write_frame(stream: ByteStream, frame_type: FrameType, packet: Packet | None = None, wire_dtype: str = "fp32", **fields: object) -> Sent:
    """Write one frame: ``packet`` (its tensors in ``wire_dtype``) and extra header ``fields``."""
    parts = _parts(packet, wire_dtype) if packet is not None else []
    descriptors, offset = [], 0
    for kind, name, part in parts:
        nbytes = part.numel() * part.element_size()
        descriptors.append([kind, name, DTYPE_NAMES[part.dtype], list(part.shape), offset, nbytes])
        offset = _padded(offset + nbytes)
    header = json.dumps({"info": dict(packet.info) if packet else {}, "tensors": descriptors, **fields}).encode()
    stream.sendall(PREFIX.pack(MAGIC, VERSION, int(frame_type), 0, len(header), offset) + header)
    kinds: dict[str, int] = {}
    written = 0
    for (kind, _, part), (*_, start, nbytes) in zip(parts, descriptors):
        if start > written:
            stream.sendall(bytes(start - written))
        if nbytes:
            stream.sendall(memoryview(part.view(torch.uint8).reshape(-1).numpy()))
        written = start + nbytes
        kinds[kind] = kinds.get(kind, 0) + nbytes
    if offset > written:
        stream.sendall(bytes(offset - written))
    return Sent(kinds, PREFIX.size + len(header) + offset - sum(kinds.values()))


def _read_exactly(stream: ByteStream, view: memoryview) -> None:
    received = 0
    while received < len(view):
        n = stream.recv_into(view[received:])
        if n == 0:
            raise PayloadError(f"frame: the connection closed after {received} of {len(view)} bytes (truncated)")
        received += n


def read_frame(stream: ByteStream, max_frame_bytes: int) -> Frame:
    """Read one frame; refuse a bad prefix, header or a frame over ``max_frame_bytes`` before its body."""
    prefix = bytearray(PREFIX.size)
    _read_exactly(stream, memoryview(prefix))
    magic, version, frame_type, _, header_bytes, body_bytes = PREFIX.unpack(prefix)
    if magic != MAGIC or version != VERSION:
        raise PayloadError(f"frame: not an flsplit v{VERSION} frame (magic {magic!r}, version {version})")
    if frame_type not in FrameType._value2member_map_:
        raise PayloadError(f"frame: unknown frame type {frame_type}")
    if header_bytes > MAX_HEADER_BYTES or PREFIX.size + header_bytes + body_bytes > max_frame_bytes:
        raise PayloadError(
            f"frame: {PREFIX.size + header_bytes + body_bytes} bytes is over the maximum of {max_frame_bytes} (max-frame-mb)"
        )
    raw_header = bytearray(header_bytes)
    _read_exactly(stream, memoryview(raw_header))
    try:
        header = json.loads(raw_header)
    except ValueError as err:
        raise PayloadError(f"frame: the header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise PayloadError("frame: the header is not a JSON object")
    body = torch.empty(body_bytes, dtype=torch.uint8)
    if body_bytes:
        _read_exactly(stream, memoryview(body.numpy()))
    header["_header_bytes"] = header_bytes
    return Frame(FrameType(frame_type), header, body)


def _views(frame: Frame) -> dict[tuple[str, str], tuple[str, list[int], torch.Tensor | None]]:
    """``(kind, part name) -> (dtype name, shape, tensor viewed in the body or None)``, checked against the body."""
    found = {}
    descriptors = frame.header.get("tensors", [])
    if not isinstance(descriptors, list):
        raise PayloadError("frame: 'tensors' is not a list")
    for descriptor in descriptors:
        try:
            kind, name, dtype_name, shape, offset, nbytes = descriptor
            shape = [int(d) for d in shape]
            offset, nbytes = int(offset), int(nbytes)
        except (TypeError, ValueError):
            raise PayloadError(f"frame: bad tensor descriptor {descriptor!r}") from None
        dtype = DTYPES.get(dtype_name)
        count = 1
        for d in shape:
            count *= d
        fits = dtype is not None and min(shape, default=0) >= 0 and offset % ALIGN == 0 and 0 <= offset
        fits = fits and offset + nbytes <= frame.body.numel() and nbytes == count * torch.empty(0, dtype=dtype).element_size()
        tensor = frame.body[offset : offset + nbytes].view(dtype).reshape(shape) if fits else None
        found[(str(kind), str(name))] = (str(dtype_name), shape, tensor)
    return found


def decode_packet(frame: Frame, specs: Sequence[TensorSpec], same_batch: bool = True, wire_dtype: str = "fp32") -> Packet:
    """Validate a PACKET frame against ``specs`` (as ``flsplit.wire.decode`` does) and return it."""
    info = frame.header.get("info")
    if not isinstance(info, dict):
        raise PayloadError("payload has no 'info' record")
    views = _views(frame)
    expected: dict[str, dict[str, TensorSpec]] = {}
    for spec in specs:
        expected.setdefault(spec.kind, {})[spec.name] = spec
    unexpected = {kind for kind, _ in views} - set(expected)
    if unexpected:
        raise PayloadError(f"payload has unexpected records {sorted(unexpected)}")
    packet = Packet(info=info)
    for kind, wanted in expected.items():
        present = {name for k, name in views if k == kind}
        if not present:
            raise PayloadError(f"payload is missing the '{kind}' record")
        lossy = kind in COMPRESSIBLE_KINDS
        suffixes = part_dtypes(wire_dtype) if lossy else {"": None}
        keys = {name + suffix for name in wanted for suffix in suffixes}
        if present != keys:
            raise PayloadError(f"'{kind}' record: missing keys {sorted(keys - present)}, unexpected keys {sorted(present - keys)}")
        packet.tensors[kind] = {
            name: _decode_tensor(views, spec, wire_dtype) if lossy else _checked(views[(kind, name)], spec) for name, spec in wanted.items()
        }
    if same_batch:
        sizes = {f"{k}.{n}": t.shape[0] for k, ts in packet.tensors.items() if k in BATCH_KINDS for n, t in ts.items()}
        if len(set(sizes.values())) > 1:
            raise PayloadError(f"batch-size mismatch between tensors: {sizes}")
    return packet


def _checked(view: tuple[str, list[int], torch.Tensor | None], spec: TensorSpec, check_finite: bool = True) -> torch.Tensor:
    """One part's tensor after the same checks as a Flower ``Array`` (``flsplit.wire``)."""
    where = f"'{spec.kind}.{spec.name}'"
    dtype_name, shape, tensor = view
    expected = DTYPE_NAMES[spec.dtype]
    if dtype_name != expected:
        raise PayloadError(f"{where}: dtype {dtype_name}, expected {expected}")
    check_shape(where, tuple(shape), spec.shape)
    if tensor is None:
        raise PayloadError(f"{where}: cannot decode the array bytes (the descriptor does not fit the body)")
    check_values(where, tensor, spec, check_finite)
    return tensor


def _decode_tensor(views: dict, spec: TensorSpec, wire_dtype: str) -> torch.Tensor:
    """Check each part of a (possibly) compressed tensor, then decompress it to float32."""
    parts = {}
    for suffix, dtype in part_dtypes(wire_dtype).items():
        shape = spec.shape if suffix != SCALE_SUFFIX else (spec.shape[1],)
        parts[suffix] = _checked(views[(spec.kind, spec.name + suffix)], TensorSpec(spec.kind, spec.name + suffix, dtype, shape), check_finite=False)
    tensor = decompress(parts, wire_dtype)
    if not all_finite(tensor):
        raise PayloadError(f"'{spec.kind}.{spec.name}': contains NaN or Inf after decompression")
    return tensor
