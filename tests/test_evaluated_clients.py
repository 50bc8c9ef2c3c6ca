"""After a client fails, each round says whose slices its test accuracy covers, and the log line marks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, Message

from flsplit.aggregation import build_aggregator
from flsplit.config import parse_run_config
from flsplit.ledger import Ledger
from flsplit.optim import build_optimizer
from flsplit.protocol import HelloRequest
from flsplit.split import build_halves
from tests.in_process_grid import HANDLERS, InProcessGrid
from strategies import get_strategy
from apps import rounds
from apps.exchange import Exchange

pytestmark = pytest.mark.usefixtures("task_identity")  # messages built outside a Flower runtime

RAW = {"dataset": "synthetic", "model": "resnet20", "cut": 2, "batch-size": 16, "max-batches": 2, "eval-samples": 32, "strategy": "dsl"}


def _honest(message: Message, context: Context) -> Message:
    return HANDLERS[message.metadata.message_type](message, context)


def _gone_after_hello(message: Message, context: Context) -> Message | None:
    """Greets, then never answers again: a SuperNode killed after start-up."""
    return _honest(message, context) if message.metadata.message_type == "query.hello" else None


def _round_one(handlers: dict, clients_dir: Path) -> dict:
    config = parse_run_config(RAW)
    grid = InProcessGrid(handlers, RAW)
    exchange = Exchange(grid, Ledger(), {n: i for i, n in enumerate(handlers)}, timeout_s=2.0)
    clients = rounds.hello(exchange, list(handlers), HelloRequest(str(clients_dir)), config)
    _, top, _ = build_halves(config)
    strategy = get_strategy("dsl")
    server = strategy.server(top, build_optimizer(list(top.parameters()), config), config)
    return rounds.RoundDriver(exchange, server, strategy, clients, config, build_aggregator("FedAvg")).run_round(1)


def test_a_round_over_every_client_covers_every_client_and_is_not_marked(tmp_path: Path) -> None:
    # Execute
    metrics = _round_one({100: _honest, 101: _honest}, tmp_path)
    # Assert
    assert metrics["evaluated_clients"] == [0, 1] and metrics["num_clients"] == 2
    assert "covers only" not in rounds.round_line(metrics, 1)


def test_a_round_after_a_failure_names_the_clients_its_accuracy_covers(tmp_path: Path) -> None:
    # Execute: partition 1 greets, then goes silent for the whole round
    metrics = _round_one({100: _honest, 101: _gone_after_hello}, tmp_path)
    # Assert: the accuracy is client 0's alone, and the log line says so
    assert metrics["failed_clients"] == [1]
    assert metrics["evaluated_clients"] == [0] and metrics["num_clients"] == 2
    assert "test_acc=" in rounds.round_line(metrics, 1)
    assert "(covers only clients [0] of 2)" in rounds.round_line(metrics, 1)
