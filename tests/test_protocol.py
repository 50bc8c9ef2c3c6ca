"""The protocol's records: each message's control fields written once, read back typed or refused."""

from __future__ import annotations

import pytest

from flsplit.protocol import EvaluateChunk, EvaluateRequest, HelloReply, HelloRequest, RoundTag, UploadTimings
from flsplit.wire import Packet, PayloadError, decode, encode


def test_a_record_survives_the_wire_with_its_types() -> None:
    # Prepare: a hello reply as a ClientApp sends it, through Flower's encoding
    reply = HelloReply(partition_id=2, num_partitions=3, num_examples=500, batches_per_round=4, nice=15, threads=1, worker_cpus=1.0, torch_version="2.14")

    # Execute
    back = HelloReply.of(decode(encode(Packet(info=reply.as_info())), []).info)

    # Assert: every field comes back equal, optional ones left unset stay unset
    assert back == reply
    assert back.worker_resources() == {"worker_cpus": 1.0}
    assert back.software() == {"torch_version": "2.14"}


def test_unset_optional_fields_are_left_out_and_defaults_fill_them_back() -> None:
    # Execute
    info = EvaluateRequest(offset=256).as_info()

    # Assert
    assert info == {"offset": 256, "evaluate": True}
    assert EvaluateRequest.of(info).checkpoint_round is None
    assert HelloRequest.of({}) == HelloRequest()


def test_a_missing_required_field_names_the_key_and_the_record() -> None:
    with pytest.raises(PayloadError, match=r"info\.round: missing from a RoundTag"):
        RoundTag.of({})
    with pytest.raises(PayloadError, match=r"info\.handler_s: missing from a UploadTimings"):
        UploadTimings.of({"fwd_s": 0.1, "bwd_s": 0.1, "peak_rss_mb": 1.0})


@pytest.mark.parametrize(
    ("record", "info", "message"),
    [
        (RoundTag, {"round": "three"}, r"info\.round: expected int, got 'three'"),
        (EvaluateChunk, {"done": 1}, r"info\.done: expected true or false, got 1"),
        (UploadTimings, {"fwd_s": None, "bwd_s": 0.0, "handler_s": 0.0, "peak_rss_mb": 0.0}, r"info\.fwd_s: expected float, got None"),
    ],
)
def test_a_field_of_the_wrong_type_is_a_payload_error(record: type, info: dict, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        record.of(info)
