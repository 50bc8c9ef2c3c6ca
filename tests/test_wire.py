"""The payload codec: round trips, byte counts, and rejection of bad payloads."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from flsplit.ledger import Ledger
from flsplit.wire import Packet, PayloadError, TensorSpec, decode, encode, serialized_size

SPECS = [
    TensorSpec("activations", "z", torch.float32, (None, 16, 8, 8)),
    TensorSpec("labels", "y", torch.int64, (None,), num_classes=10),
]


def _upload(n: int = 4) -> Packet:
    return Packet(
        {"activations": {"z": torch.randn(n, 16, 8, 8)}, "labels": {"y": torch.arange(n) % 10}},
        {"batch_sizes": [n], "done": False},
    )


def test_round_trip_is_exact_and_keeps_info() -> None:
    # Prepare
    packet = _upload()
    # Execute
    back = decode(encode(packet), SPECS)
    # Assert
    assert torch.equal(back.tensors["activations"]["z"], packet.tensors["activations"]["z"])
    assert torch.equal(back.tensors["labels"]["y"], packet.tensors["labels"]["y"])
    assert back.info == packet.info


def test_serialized_size_is_raw_bytes_plus_small_framing() -> None:
    content = encode(_upload(32))
    raw = 32 * 16 * 8 * 8 * 4
    size = serialized_size(content["activations"])
    assert raw < size < raw + 1024


def test_ledger_separates_kinds_directions_and_phases() -> None:
    # Prepare
    ledger = Ledger()
    up = encode(_upload(8))
    down = encode(Packet({"gradients": {"dz": torch.randn(8, 16, 8, 8)}}))
    # Execute
    ledger.count(0, "up", up)
    ledger.count(0, "down", down)
    ledger.count(1, "up", up, phase="eval")
    summary = ledger.round_summary()
    # Assert
    assert summary["bytes_up"] == summary["bytes_up_activations"] + summary["bytes_up_labels"]
    assert summary["bytes_down"] == summary["bytes_down_gradients"]
    assert abs(summary["bytes_down_gradients"] - summary["bytes_up_activations"]) < 64
    assert summary["bytes_eval_up"] == serialized_size(up["activations"]) + serialized_size(up["labels"]) + serialized_size(up["info"])
    assert ledger.round_summary()["bytes_up"] == 0  # a new round starts from zero


def _tamper(record: str, key: str, array: Array) -> RecordDict:
    content = encode(_upload())
    content[record][key] = array
    return content


@pytest.mark.parametrize(
    ("content_fn", "problem"),
    [
        (lambda: _drop("labels"), "missing the 'labels' record"),
        (lambda: _tamper("activations", "zz", Array(np.zeros((4, 16, 8, 8), np.float32))), "unexpected keys"),
        (lambda: _tamper("activations", "z", Array(np.zeros((4, 16, 8, 8), np.float64))), "dtype float64"),
        (lambda: _tamper("activations", "z", Array(np.zeros((4, 32, 8, 8), np.float32))), "shape"),
        (lambda: _tamper("activations", "z", Array(np.full((4, 16, 8, 8), np.nan, np.float32))), "NaN or Inf"),
        (lambda: _tamper("activations", "z", Array(np.full((4, 16, 8, 8), np.inf, np.float32))), "NaN or Inf"),
        (lambda: _tamper("activations", "z", Array(_one_bad(-np.inf))), "NaN or Inf"),
        (lambda: _tamper("activations", "z", Array(_one_bad(np.nan))), "NaN or Inf"),
        (lambda: _tamper("labels", "y", Array(np.array([0, 1, 2, 10]))), "label values"),
        (lambda: _tamper("labels", "y", Array(np.array([0, 1, 2]))), "batch-size mismatch"),
        (lambda: _truncated(), "cannot decode|bytes hold"),
        (lambda: _with_extra_record(), "unexpected records"),
    ],
)
def test_bad_payload_is_rejected_with_a_named_problem(content_fn, problem: str) -> None:  # noqa: ANN001
    with pytest.raises(PayloadError, match=problem):
        decode(content_fn(), SPECS)


def _one_bad(value: float) -> np.ndarray:
    """Ordinary activations with a single non-finite value among them."""
    values = np.random.default_rng(0).standard_normal((4, 16, 8, 8)).astype(np.float32)
    values[2, 5, 3, 1] = value
    return values


def _drop(record: str) -> RecordDict:
    content = encode(_upload())
    del content[record]
    return content


def _truncated() -> RecordDict:
    good = Array(np.zeros((4, 16, 8, 8), np.float32))
    return _tamper("activations", "z", Array(good.dtype, good.shape, good.stype, good.data[:-100]))


def _with_extra_record() -> RecordDict:
    content = encode(_upload())
    content["gradients"] = ArrayRecord({"dz": Array(np.zeros(1, np.float32))})
    return content


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 5),
    labels=st.lists(st.integers(-3, 12), min_size=1, max_size=5),
    scale=st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_fuzzed_payloads_either_round_trip_or_raise_payload_error(n: int, labels: list[int], scale: float) -> None:
    # Prepare
    z = torch.ones(n, 16, 8, 8) * scale
    packet = Packet({"activations": {"z": z}, "labels": {"y": torch.tensor(labels)}})
    valid = len(labels) == n and all(0 <= v < 10 for v in labels) and np.isfinite(scale)
    # Execute / Assert
    if valid:
        assert torch.equal(decode(encode(packet), SPECS).tensors["activations"]["z"], z)
    else:
        with pytest.raises(PayloadError):
            decode(encode(packet), SPECS)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 2000))
def test_fuzzed_truncation_never_escapes_as_another_error(cut: int) -> None:
    good = Array(np.arange(4 * 16 * 8 * 8, dtype=np.float32).reshape(4, 16, 8, 8))
    broken = Array(good.dtype, good.shape, good.stype, good.data[: min(cut, len(good.data) - 1)])
    with pytest.raises(PayloadError):
        decode(_tamper("activations", "z", broken), SPECS)
