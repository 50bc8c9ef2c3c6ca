"""Wire compression of activations and gradients: round-trip error bounds per dtype."""

import numpy as np
import pytest
import torch
from flwr.app import Array

from flsplit.compression import WIRE_DTYPES, compress, decompress
from flsplit.wire import Packet, PayloadError, TensorSpec, decode, encode, serialized_size

SPECS = [
    TensorSpec("activations", "z", torch.float32, (None, 16, 8, 8)),
    TensorSpec("labels", "y", torch.int64, (None,), num_classes=10),
]


def _z(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-2, 2, 16).view(1, 16, 1, 1)  # channels of very different magnitude
    return torch.relu(torch.randn(32, 16, 8, 8, generator=g)) * scales


@pytest.mark.parametrize(
    ("wire_dtype", "rel_bound", "abs_bound"),
    [("fp32", 0.0, 0.0), ("fp16", 2**-11, 2**-25), ("bf16", 2**-8, 0.0)],  # fp16: subnormals below 6e-5
)
def test_float_formats_stay_within_their_rounding_error(wire_dtype: str, rel_bound: float, abs_bound: float) -> None:
    z = _z()
    back = decompress(compress(z, wire_dtype), wire_dtype)
    assert back.dtype == torch.float32 and back.shape == z.shape
    assert torch.all((back - z).abs() <= rel_bound * z.abs() + abs_bound)


def test_int8_error_is_at_most_half_a_step_of_each_channels_scale() -> None:
    # Prepare
    z = _z() - 0.5 * _z(1)  # signed values
    # Execute
    parts = compress(z, "int8")
    back = decompress(parts, "int8")
    # Assert
    step = z.abs().amax(dim=(0, 2, 3)) / 127
    assert parts[""].dtype == torch.int8 and parts[".scale"].shape == (16,)
    assert torch.all((back - z).abs() <= (step / 2 + 1e-7).view(1, 16, 1, 1))


def test_int8_keeps_all_zero_channels_exact() -> None:
    z = _z()
    z[:, 3] = 0
    assert torch.equal(decompress(compress(z, "int8"), "int8")[:, 3], z[:, 3])


@pytest.mark.parametrize(("wire_dtype", "ratio"), [("fp32", 1.0), ("fp16", 0.5), ("bf16", 0.5), ("int8", 0.25)])
def test_codec_sends_compressed_bytes_and_the_ledger_sees_them(wire_dtype: str, ratio: float) -> None:
    # Prepare
    packet = Packet({"activations": {"z": _z()}, "labels": {"y": torch.arange(32) % 10}})
    raw = _z().numel() * 4
    # Execute
    content = encode(packet, wire_dtype)
    back = decode(content, SPECS, wire_dtype=wire_dtype)
    # Assert
    assert serialized_size(content["activations"]) == pytest.approx(raw * ratio, abs=1200)  # + array headers
    assert back.tensors["activations"]["z"].dtype == torch.float32
    assert torch.equal(back.tensors["labels"]["y"], packet.tensors["labels"]["y"])  # labels never lossy


def test_payload_in_another_wire_dtype_is_rejected() -> None:
    content = encode(Packet({"activations": {"z": _z()}, "labels": {"y": torch.arange(32) % 10}}), "fp16")
    with pytest.raises(PayloadError, match="dtype float16, expected int16"):
        decode(content, SPECS, wire_dtype="bf16")
    with pytest.raises(PayloadError, match="missing keys \\['z.scale'\\]"):
        decode(content, SPECS, wire_dtype="int8")


def test_int8_with_a_non_finite_scale_is_rejected() -> None:
    content = encode(Packet({"activations": {"z": _z()}, "labels": {"y": torch.arange(32) % 10}}), "int8")
    content["activations"]["z.scale"] = Array(np.full(16, np.inf, np.float32))
    with pytest.raises(PayloadError, match="NaN or Inf"):
        decode(content, SPECS, wire_dtype="int8")


def test_every_wire_dtype_is_covered() -> None:
    assert set(WIRE_DTYPES) == {"fp32", "fp16", "bf16", "int8"}
