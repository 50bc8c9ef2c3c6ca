"""Bad payloads are rejected per message, on both sides, and never touch a model."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from logging import ERROR

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.common.logger import log

from flsplit.aggregation import build_aggregator
from flsplit.config import parse_run_config
from flsplit.flwr_internals import stamp
from flsplit.ledger import Ledger
from flsplit.optim import build_optimizer
from flsplit.protocol import EvaluateRequest, HelloReply, HelloRequest, MessageKind
from flsplit.split import build_halves
from flsplit.wire import Packet, PayloadError, encode
from tests.in_process_grid import InProcessGrid
from strategies import ServerHalf, get_strategy
from apps import client_app, rounds
from apps.client_app import train_step
from apps.exchange import Exchange, client_reason

pytestmark = pytest.mark.usefixtures("task_identity")  # messages built outside a Flower runtime


RAW = {"dataset": "synthetic", "model": "resnet20", "cut": 2, "batch-size": 16, "max-batches": 3, "strategy": "dsl"}
CONFIG = parse_run_config(RAW)
Z_SHAPE = (16, 32, 32)


def _good(n: int = 16) -> RecordDict:
    return encode(Packet({"activations": {"z": torch.randn(n, *Z_SHAPE)}, "labels": {"y": torch.arange(n) % 10}}, {"done": True, "batch_sizes": [n]}))


def _replace(record: str, key: str, array: Array) -> RecordDict:
    content = _good()
    content[record][key] = array
    return content


def _truncated() -> RecordDict:
    good = Array(np.zeros((16, *Z_SHAPE), np.float32))
    return _replace("activations", "z", Array(good.dtype, good.shape, good.stype, good.data[:-999]))


def _without(record: str) -> RecordDict:
    content = _good()
    del content[record]
    return content


BAD: dict[str, Callable[[], RecordDict]] = {
    "missing key": lambda: _without("labels"),
    "wrong dtype": lambda: _replace("activations", "z", Array(np.zeros((16, *Z_SHAPE), np.float16))),
    "wrong shape for the cut": lambda: _replace("activations", "z", Array(np.zeros((16, 32, 16, 16), np.float32))),
    "NaN": lambda: _replace("activations", "z", Array(np.full((16, *Z_SHAPE), np.nan, np.float32))),
    "Inf": lambda: _replace("activations", "z", Array(np.full((16, *Z_SHAPE), -np.inf, np.float32))),
    "label out of range": lambda: _replace("labels", "y", Array(np.full(16, 10))),
    "batch-size mismatch": lambda: _replace("labels", "y", Array(np.zeros(15, np.int64))),
    "batch sizes disagree with samples": lambda: encode(Packet({"activations": {"z": torch.zeros(16, *Z_SHAPE)}, "labels": {"y": torch.zeros(16, dtype=torch.int64)}}, {"done": True, "batch_sizes": [8, 4]})),
    "truncated bytes": _truncated,
}
EXPECTED = {
    "missing key": "missing the 'labels' record",
    "wrong dtype": "dtype float16",
    "wrong shape for the cut": "shape",
    "NaN": "NaN or Inf",
    "Inf": "NaN or Inf",
    "label out of range": "label values",
    "batch-size mismatch": "batch-size mismatch",
    "batch sizes disagree with samples": "batch_sizes",
    "truncated bytes": "cannot decode|bytes hold",
    "unknown message type": "reply of type 'query.bogus'",
}


def _adversary(kind: str) -> Callable[[Message, Context], Message]:
    def handler(message: Message, _: Context) -> Message:
        if message.metadata.message_type == "query.hello":
            return Message(encode(Packet(info=HelloReply(partition_id=1, num_partitions=2, num_examples=48, batches_per_round=3, nice=0, threads=1).as_info())), reply_to=message)
        if kind == "unknown message type":
            reply = Message(_good(), reply_to=message)
            stamp(reply, message_type="query.bogus")
            return reply
        return Message(BAD[kind](), reply_to=message)

    return handler


def _honest(message: Message, context: Context) -> Message:
    handler = {"query.hello": client_app.hello, "train.step": train_step}[message.metadata.message_type]
    return handler(message, context)


def _driver(exchange: Exchange, server: ServerHalf, clients: list[rounds.Client]) -> rounds.RoundDriver:
    return rounds.RoundDriver(exchange, server, get_strategy("dsl"), clients, CONFIG, build_aggregator("FedAvg"))


def _server():  # noqa: ANN202
    _, top, _ = build_halves(CONFIG)
    return get_strategy("dsl").server(top, build_optimizer(list(top.parameters()), CONFIG), CONFIG)


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_bad_upload_is_rejected_and_leaves_the_top_slice_unchanged(kind: str) -> None:
    # Prepare: one adversarial client only
    grid = InProcessGrid({101: _adversary(kind)}, RAW)
    exchange = Exchange(grid, Ledger(), {101: 0})
    clients = rounds.hello(exchange, [101], HelloRequest(), CONFIG)
    server = _server()
    before = [p.detach().clone() for p in server.top.parameters()]
    # Execute
    stats = _driver(exchange, server, clients).train(1)
    # Assert
    assert list(stats.failures) == [1]
    assert re.search(EXPECTED[kind], stats.failures[1])
    assert all(torch.equal(b, p) for b, p in zip(before, server.top.parameters()))


def test_server_keeps_training_the_other_clients_when_one_sends_garbage() -> None:
    # Prepare: an honest client (partition 0, real handlers) and an adversary (partition 1)
    grid = InProcessGrid({100: _honest, 101: _adversary("NaN")}, RAW)
    exchange = Exchange(grid, Ledger(), {100: 0, 101: 1})
    clients = rounds.hello(exchange, [100, 101], HelloRequest(), CONFIG)
    server = _server()
    before = [p.detach().clone() for p in server.top.parameters()]
    # Execute
    stats = _driver(exchange, server, clients).train(1)
    # Assert
    assert list(stats.failures) == [1] and "NaN" in stats.failures[1]
    assert stats.samples == 48  # all three batches of the honest client were served
    assert any(not torch.equal(b, p) for b, p in zip(before, server.top.parameters()))


def _client_context(raw: dict) -> Context:
    return Context(run_id=9, node_id=3, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(), run_config=raw)


@pytest.mark.parametrize(
    ("gradient", "problem"),
    [
        (np.zeros((16, 32, 16, 16), np.float32), "shape"),
        (np.full((16, *Z_SHAPE), np.nan, np.float32), "NaN"),
        (np.zeros((16, *Z_SHAPE), np.float64), "dtype"),
    ],
)
def test_client_rejects_a_bad_gradient_and_keeps_its_state(gradient: np.ndarray, problem: str) -> None:
    # Prepare: a CSL client that has sent one batch and waits for its gradient
    raw = RAW | {"strategy": "csl"}
    context = _client_context(raw)
    first = Message(encode(Packet(info={"round": 1})), dst_node_id=3, message_type="train.step")
    stamp(first, message_id="m1")
    train_step(first, context)
    saved = {k: v.numpy().copy() for k, v in context.state["flsplit.weights"].items()}
    content = encode(Packet(info={"round": 1}))
    content["gradients"] = ArrayRecord({"dz": Array(gradient)})
    bad = Message(content, dst_node_id=3, message_type="train.step")
    stamp(bad, message_id="m2")
    # Execute / Assert
    with pytest.raises(PayloadError, match=problem):
        train_step(bad, context)
    after = {k: v.numpy() for k, v in context.state["flsplit.weights"].items()}
    assert all(np.array_equal(saved[k], after[k]) for k in saved)


def test_client_rejects_aggregated_weights_of_the_wrong_shape() -> None:
    # Prepare
    context = _client_context(RAW)
    bottom, _, aux = build_halves(CONFIG)
    weights = {f"bottom.{k}": v for k, v in bottom.state_dict().items() if "num_batches" not in k}
    weights |= {f"aux.{k}": v for k, v in aux.state_dict().items()}
    weights["bottom.0.0.weight"] = torch.zeros(3, 3, 3, 3)
    message = Message(encode(Packet({"weights": weights}, EvaluateRequest(evaluate=False).as_info())), dst_node_id=3, message_type="evaluate")
    # Execute / Assert
    with pytest.raises(PayloadError, match="bottom.0.0.weight.*shape"):
        client_app.evaluate(message, context)


def test_a_client_that_never_answers_times_out_and_the_round_goes_on() -> None:
    # Prepare: partition 1 greets, then goes silent
    def silent(message: Message, context: Context) -> Message | None:
        return _adversary("NaN")(message, context) if message.metadata.message_type == "query.hello" else None

    grid = InProcessGrid({100: _honest, 101: silent}, RAW)
    exchange = Exchange(grid, Ledger(), {100: 0, 101: 1}, timeout_s=0.3)
    clients = rounds.hello(exchange, [100, 101], HelloRequest(), CONFIG)
    # Execute
    stats = _driver(exchange, _server(), clients).train(1)
    # Assert
    assert list(stats.failures) == [1] and "no reply within 0.3 s" in stats.failures[1]
    assert stats.samples == 48


class _OversizeGrid(InProcessGrid):
    """Answers normally, but a pull that includes ``big``'s reply fails as an HTTP 413 would."""

    def __init__(self, handlers: dict, run_config: dict, big: int) -> None:
        super().__init__(handlers, run_config)
        self.big, self._owner = big, {}

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        messages = list(messages)
        ids = super().push_messages(messages)
        self._owner.update({i: m.metadata.dst_node_id for i, m in zip(ids, messages)})
        return ids

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        message_ids = list(message_ids)
        if any(self._owner.get(i) == self.big for i in message_ids):
            log(ERROR, "\n\n[Grid.pull_messages] HTTP payload too large:\n")  # as flwr's HttpGrid does
            return []
        return super().pull_messages(message_ids)


def test_a_reply_lost_to_a_size_limit_is_a_clear_error_not_a_hang() -> None:
    # Prepare: partition 1's replies can never be pulled
    grid = _OversizeGrid({100: _honest, 101: _honest}, RAW, big=101)
    exchange = Exchange(grid, Ledger(), {100: 0, 101: 1}, timeout_s=600)
    exchange.send(100, MessageKind.HELLO, Packet(info={}))
    exchange.send(101, MessageKind.HELLO, Packet(info={}))
    # Execute
    started = time.monotonic()
    honest = exchange.receive(100, [])
    lost = exchange.receive(101, [])
    # Assert
    assert honest.packet is not None
    assert lost.packet is None and "too large for the SuperLink (HTTP 413)" in lost.error
    assert time.monotonic() - started < 5


def test_a_client_error_wrapped_in_a_ray_traceback_reads_as_the_clients_own_message() -> None:
    # Prepare: Flower's simulation reason for a ClientApp that raised (shortened)
    wrapped = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run() ...\\n"
        "  File \"client_app.py\", line 76, in hello\\nflsplit.data.errors.DatasetNotFoundError: data-dir: no cifar10 found\\n"
        "flwr.clientapp.client_app.ClientAppException: \\nException ClientAppException occurred. Message: data-dir: no cifar10 found at '/x'.'>"
    )
    # Execute / Assert
    assert client_reason(wrapped) == "data-dir: no cifar10 found at '/x'."
    assert client_reason("plain reason") == "plain reason"
