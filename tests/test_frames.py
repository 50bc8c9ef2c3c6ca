"""The data plane's frame codec: exact round trips without copies, and the same refusals as the message codec."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flsplit.frames import MAGIC, PREFIX, VERSION, FrameType, decode_packet, read_frame, write_frame
from flsplit.wire import Packet, PayloadError, TensorSpec

SPECS = [
    TensorSpec("activations", "z", torch.float32, (None, 16, 8, 8)),
    TensorSpec("labels", "y", torch.int64, (None,), num_classes=10),
]
MAX = 64 << 20


class _Pipe:
    """A byte stream in memory: what ``write_frame`` wrote, read back by ``read_frame``."""

    def __init__(self, data: bytes = b"") -> None:
        self.data, self.position = bytearray(data), 0

    def sendall(self, data: bytes | memoryview) -> None:
        self.data += bytes(data)

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        n = min(len(buffer), len(self.data) - self.position)
        buffer[:n] = self.data[self.position : self.position + n]
        self.position += n
        return n


def _upload(n: int = 4) -> Packet:
    return Packet({"activations": {"z": torch.randn(n, 16, 8, 8)}, "labels": {"y": torch.arange(n) % 10}}, {"batch_sizes": [n], "done": False})


def _through(packet: Packet, wire_dtype: str = "fp32", specs: list[TensorSpec] = SPECS) -> Packet:
    pipe = _Pipe()
    write_frame(pipe, FrameType.PACKET, packet, wire_dtype)
    return decode_packet(read_frame(pipe, MAX), specs, wire_dtype=wire_dtype)


def test_round_trip_over_a_real_socket_is_exact_and_keeps_info() -> None:
    # Prepare
    packet = _upload(32)
    left, right = socket.socketpair()
    # Execute: a writer thread, since 8 MiB-sized frames exceed the socket buffer
    writer = threading.Thread(target=write_frame, args=(left, FrameType.PACKET, packet))
    writer.start()
    back = decode_packet(read_frame(right, MAX), SPECS)
    writer.join()
    left.close()
    right.close()
    # Assert
    assert torch.equal(back.activations, packet.activations) and torch.equal(back.labels, packet.labels)
    assert back.info == packet.info


def test_received_tensors_are_views_of_one_body_buffer() -> None:
    # Execute
    pipe = _Pipe()
    write_frame(pipe, FrameType.PACKET, _upload())
    frame = read_frame(pipe, MAX)
    back = decode_packet(frame, SPECS)
    # Assert: zero copy on receipt
    assert back.activations.untyped_storage().data_ptr() == frame.body.untyped_storage().data_ptr()


def test_bytes_written_are_counted_per_kind_and_the_rest_as_control() -> None:
    # Execute
    pipe = _Pipe()
    sent = write_frame(pipe, FrameType.PACKET, _upload(8))
    # Assert: payload bytes exactly; the prefix, header and padding are control
    assert sent.kinds == {"activations": 8 * 16 * 8 * 8 * 4, "labels": 8 * 8}
    assert sent.total == len(pipe.data) and 0 < sent.control < 1024
    assert read_frame(pipe, MAX).sent == sent  # the receiver counts what the sender did


@pytest.mark.parametrize("wire_dtype", ["fp32", "fp16", "bf16", "int8"])
def test_wire_dtypes_decode_as_the_message_codec_does(wire_dtype: str) -> None:
    from flsplit.wire import decode, encode  # noqa: PLC0415 - the reference codec

    # Prepare
    packet = _upload()
    # Execute
    framed = _through(packet, wire_dtype)
    messaged = decode(encode(packet, wire_dtype), SPECS, wire_dtype=wire_dtype)
    # Assert
    assert torch.equal(framed.activations, messaged.activations) and torch.equal(framed.labels, messaged.labels)


def _tampered(kind: str, name: str, tensor: torch.Tensor) -> Packet:
    packet = _upload()
    packet.tensors.setdefault(kind, {})[name] = tensor
    return packet


def _one_bad(value: float) -> torch.Tensor:
    z = torch.randn(4, 16, 8, 8)
    z[2, 5, 3, 1] = value
    return z


@pytest.mark.parametrize(
    ("packet_fn", "problem"),
    [
        (lambda: Packet({"activations": {"z": torch.randn(4, 16, 8, 8)}}), "missing the 'labels' record"),
        (lambda: _tampered("activations", "zz", torch.zeros(4, 16, 8, 8)), "unexpected keys"),
        (lambda: _tampered("activations", "z", torch.zeros(4, 32, 8, 8)), "shape"),
        (lambda: _tampered("activations", "z", torch.full((4, 16, 8, 8), float("nan"))), "NaN or Inf"),
        (lambda: _tampered("activations", "z", _one_bad(float("-inf"))), "NaN or Inf"),
        (lambda: _tampered("labels", "y", torch.tensor([0, 1, 2, 10])), "label values"),
        (lambda: _tampered("labels", "y", torch.tensor([0, 1, 2])), "batch-size mismatch"),
        (lambda: _tampered("gradients", "dz", torch.zeros(1)), "unexpected records"),
    ],
)
def test_bad_payload_is_rejected_with_the_message_codecs_reason(packet_fn, problem: str) -> None:  # noqa: ANN001
    with pytest.raises(PayloadError, match=problem):
        _through(packet_fn())


def test_a_tensor_in_another_dtype_is_refused() -> None:
    # Prepare: sent as fp16, expected as fp32
    pipe = _Pipe()
    write_frame(pipe, FrameType.PACKET, _upload(), "fp16")
    # Execute / Assert
    with pytest.raises(PayloadError, match="dtype float16, expected float32"):
        decode_packet(read_frame(pipe, MAX), SPECS)


def test_a_frame_over_the_maximum_is_refused_before_its_body_is_read() -> None:
    # Prepare
    pipe = _Pipe()
    write_frame(pipe, FrameType.PACKET, _upload(32))
    # Execute / Assert
    with pytest.raises(PayloadError, match="over the maximum.*max-frame-mb"):
        read_frame(pipe, 1 << 16)
    assert pipe.position == PREFIX.size  # nothing past the prefix was read


def test_a_truncated_frame_names_the_truncation() -> None:
    pipe = _Pipe()
    write_frame(pipe, FrameType.PACKET, _upload())
    with pytest.raises(PayloadError, match="truncated"):
        read_frame(_Pipe(bytes(pipe.data[:-100])), MAX)


def test_a_header_that_does_not_describe_its_body_is_refused() -> None:
    # Prepare: a descriptor claiming more bytes than the body has
    header = json.dumps({"info": {}, "tensors": [["labels", "y", "int64", [4], 0, 32]]}).encode()
    data = PREFIX.pack(MAGIC, VERSION, int(FrameType.PACKET), 0, len(header), 16) + header + bytes(16)
    # Execute / Assert
    with pytest.raises(PayloadError, match="cannot decode"):
        decode_packet(read_frame(_Pipe(data), MAX), [SPECS[1]])


def test_garbage_is_not_taken_for_a_frame() -> None:
    with pytest.raises(PayloadError, match="not an flsplit"):
        read_frame(_Pipe(b"GET / HTTP/1.1\r\n\r\n" + bytes(64)), MAX)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 3000))
def test_fuzzed_truncation_never_escapes_as_another_error(cut: int) -> None:
    pipe = _Pipe()
    write_frame(pipe, FrameType.PACKET, _upload())
    with pytest.raises(PayloadError):
        decode_packet(read_frame(_Pipe(bytes(pipe.data[: min(cut, len(pipe.data) - 1)])), MAX), SPECS)
