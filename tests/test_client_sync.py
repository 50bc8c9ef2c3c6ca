"""``client-sync`` and ``serve-order``: what each strategy does by default, the values it admits,
the order clients are served in, and the relay's hand-offs and their bytes (in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Message

from flsplit.config import ConfigError
from tests.in_process_grid import run_server_app
from tests.traffic import weights_bytes
from strategies import get_strategy, parse_config

#: Strategy -> (its own client sync, its own serving order).
OWN = {
    "csl": ("none", "interleaved"),
    "dsl": ("none", "interleaved"),
    "hybrid": ("none", "interleaved"),
    "cse-fsl": ("average", "interleaved"),
    "fsl-sage": ("average", "interleaved"),
    "splitfed-v1": ("average", "interleaved"),
    "splitfed-v2": ("average", "sequential"),
    "fedavg": ("average", "interleaved"),
}


@pytest.mark.parametrize("name", sorted(OWN))
def test_each_strategy_has_its_own_sync_and_order_when_the_keys_are_empty(name: str) -> None:
    # Prepare
    strategy, config = get_strategy(name), parse_config({"strategy": name})
    # Execute / Assert
    assert (strategy.sync_of(config), strategy.order_of(config)) == OWN[name]
    assert strategy.aggregates(config) == (OWN[name][0] == "average")


def test_aggregate_clients_is_the_old_spelling_of_average() -> None:
    # Execute
    config = parse_config({"strategy": "dsl", "aggregate-clients": True})
    # Assert
    assert get_strategy("dsl").sync_of(config) == "average" and get_strategy("dsl").aggregates(config)


def test_a_relayed_run_is_served_sequentially_in_partition_order() -> None:
    # Prepare
    csl, config = get_strategy("csl"), parse_config({"strategy": "csl", "client-sync": "relay"})
    # Execute / Assert
    assert csl.relays(config) and not csl.aggregates(config)
    assert csl.serving_groups(config, 1, 3) == csl.serving_groups(config, 2, 3) == [[0], [1], [2]]


@pytest.mark.parametrize(("order", "groups"), [("interleaved", [[0, 1, 2]]), ("sequential", [[0], [1], [2]])])
def test_fixed_serving_orders(order: str, groups: list[list[int]]) -> None:
    # Prepare
    config = parse_config({"strategy": "dsl", "serve-order": order})
    # Execute / Assert
    assert get_strategy("dsl").serving_groups(config, 7, 3) == groups


def test_shuffled_order_is_fixed_by_the_seed_and_differs_across_rounds() -> None:
    # Prepare
    v2 = get_strategy("splitfed-v2")
    seed0 = parse_config({"strategy": "splitfed-v2", "serve-order": "shuffled"})
    seed1 = parse_config({"strategy": "splitfed-v2", "serve-order": "shuffled", "seed": 1})
    # Execute
    orders = [v2.serving_groups(seed0, r, 5) for r in range(1, 11)]
    again = [v2.serving_groups(seed0, r, 5) for r in range(1, 11)]
    other = [v2.serving_groups(seed1, r, 5) for r in range(1, 11)]
    # Assert: every round serves each client once, alone; a seed fixes the orders; rounds differ
    assert all(sorted(g[0] for g in groups) == [0, 1, 2, 3, 4] and all(len(g) == 1 for g in groups) for groups in orders)
    assert orders == again and orders != other
    assert len({tuple(g[0] for g in groups) for groups in orders}) > 5


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"strategy": "csl", "client-sync": "relay", "serve-order": "interleaved"}, ["relay", "sequential"]),
        ({"strategy": "dsl", "client-sync": "none", "aggregate-clients": True}, ["aggregate-clients", "client-sync"]),
    ],
)
def test_contradictory_keys_are_refused_naming_both(raw: dict, names: list[str]) -> None:
    # Execute
    with pytest.raises(ConfigError) as refused:
        parse_config(raw)
    # Assert
    assert all(name in str(refused.value) for name in names)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"strategy": "csl", "client-sync": "average", "serve-order": "sequential"}, ["splitfed-v2"]),
        ({"strategy": "csl", "client-sync": "average", "serve-order": "shuffled"}, ["splitfed-v2", "shuffled"]),
        ({"strategy": "splitfed-v2", "client-sync": "none"}, ["splitfed-v2", "'average'", "csl"]),
        ({"strategy": "splitfed-v1", "client-sync": "relay"}, ["splitfed-v1", "'average'"]),
        ({"strategy": "fedavg", "client-sync": "none"}, ["fedavg", "clients = 1"]),
    ],
)
def test_a_sync_that_duplicates_or_contradicts_a_strategy_is_refused(raw: dict, names: list[str]) -> None:
    # Prepare
    strategy, config = get_strategy(raw["strategy"]), parse_config(raw)
    # Execute
    with pytest.raises(ConfigError) as refused:
        strategy.sync_of(config)
    # Assert
    assert "client-sync" in str(refused.value) and all(name in str(refused.value) for name in names)


def test_csl_averaged_and_interleaved_is_not_splitfed_v2_and_runs() -> None:
    # Prepare
    config = parse_config({"strategy": "csl", "client-sync": "average"})
    # Execute / Assert
    assert get_strategy("csl").aggregates(config) and get_strategy("csl").order_of(config) == "interleaved"


@pytest.mark.slow  # a few seconds: the real ServerApp and ClientApps in process
@pytest.mark.usefixtures("task_identity")
def test_relay_hands_the_slice_from_client_to_client_and_counts_its_bytes(tmp_path: Path) -> None:
    # Prepare: 2 clients (nodes 101, 102), 2 rounds of 2 batches, served in partition order
    sent: list[tuple[int, str]] = []
    config = {
        "dataset": "synthetic", "model": "resnet20", "num-server-rounds": 2, "max-batches": 2,
        "batch-size": 16, "eval-samples": 32, "chunk-mb": 1.5, "strategy": "csl", "client-sync": "relay",
        "run-name": "relay",
    }

    def observe(message: Message) -> None:
        sent.append((message.metadata.dst_node_id, message.metadata.message_type))

    # Execute
    rounds = run_server_app(config, tmp_path, through_protobuf=True, observe=observe)
    # Assert: client 0's whole round, its slice up and down to client 1, client 1's round;
    # round 2 starts from client 1's slice; only the holder of the slice is scored
    training = [(node, kind) for node, kind in sent if kind != "query.hello" and kind != "evaluate"]
    round_1 = [(101, "train.step")] * 3 + [(101, "train.sync"), (102, "train.relay")] + [(102, "train.step")] * 3
    round_2 = [(102, "train.sync"), (101, "train.relay")] + [(101, "train.step")] * 3 + [(101, "train.sync"), (102, "train.relay")] + [(102, "train.step")] * 3
    assert training == round_1 + round_2
    slice_bytes = weights_bytes("csl", ("bottom",))
    assert 1.5 * slice_bytes < rounds[0]["bytes_model_relay"] <= 2 * slice_bytes  # one hand-off: up and down
    assert 3 * slice_bytes < rounds[1]["bytes_model_relay"] <= 4 * slice_bytes  # two hand-offs
    assert all(r["bytes_model_sync"] == 0 and len(r["test_accuracy_per_client"]) == 1 for r in rounds)
    assert rounds[1]["bytes_up"] >= rounds[1]["bytes_up_activations"] + rounds[1]["bytes_model_relay"] / 2
    facts = json.loads((tmp_path / "relay" / "config.json").read_text())
    assert (facts["client_sync"], facts["serving_order"], facts["transport"], facts["topology"]) == ("relay", "sequential", "messages", "label-sharing")


@pytest.mark.slow  # a few seconds: the real ServerApp and ClientApps in process, three runs
@pytest.mark.usefixtures("task_identity")
def test_a_resumed_relay_continues_from_the_holder_of_the_slice_as_an_uninterrupted_run(tmp_path: Path) -> None:
    # Prepare: a shuffled relayed run of 3 rounds, and the same run stopped after round 1
    config = {
        "dataset": "synthetic", "model": "resnet20", "max-batches": 2, "batch-size": 16, "eval-samples": 32,
        "chunk-mb": 1.5, "strategy": "csl", "client-sync": "relay", "serve-order": "shuffled", "seed": 3,
    }
    whole = run_server_app(config | {"num-server-rounds": 3, "run-name": "whole"}, tmp_path)
    run_server_app(config | {"num-server-rounds": 1, "run-name": "cut"}, tmp_path)
    # Execute: resume it for rounds 2 and 3 (a constant rate lets the length grow)
    resumed = run_server_app(config | {"num-server-rounds": 3, "run-name": "cut", "resume": True}, tmp_path)
    # Assert: the same hand-offs and the same models
    for a, b in zip(whole, resumed, strict=True):
        assert a["bytes_model_relay"] == b["bytes_model_relay"] and a["test_accuracy"] == b["test_accuracy"]
    assert whole[-1]["test_loss"] == resumed[-1]["test_loss"]
