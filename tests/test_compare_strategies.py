"""The comparison driver: its entries' run configs, the aggregation over seeds, partial results,
and the runs it keeps from its committed JSON (a fresh machine has no checkpoints)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from experiments.compare_strategies import (
    CANDIDATES,
    ENTRIES,
    completed_results,
    entry_keys,
    optimizer_of,
    reach_text,
    shared_settings,
    summary,
    sweep_test_images,
    write_outputs,
)
from flsplit.optim import build_optimizer
from flsplit.wire import Packet
from tests.halves import make_client
from strategies import get_strategy, parse_config
from strategies.fedavg import FedAvgClient


def _run(accuracies: list[float], gb_per_round: float = 1.0, per_client: list[float] | None = None) -> dict:
    rounds = [
        {"round": i + 1, "test_accuracy": a, "cumulative_gb": gb_per_round * (i + 1), "round_s": 10.0, "test_accuracy_per_client": per_client}
        for i, a in enumerate(accuracies)
    ]
    return {"rounds": rounds, "optimizer": "adam-0.001", "client_sync": "none", "serving_order": "shuffled", "transport": "messages"}


def test_seeds_aggregate_to_mean_std_last_three_and_k_of_n_reached() -> None:
    # Prepare: three seeds; the first crosses 60 % in round 3, the second in round 4, the third never
    results = {
        "csl": {
            "0": _run([0.4, 0.55, 0.62, 0.64], per_client=[0.5, 0.7, 0.6]),
            "1": _run([0.3, 0.52, 0.58, 0.66], per_client=[0.6, 0.8, 0.5]),
            "2": _run([0.35, 0.5, 0.55, 0.56], per_client=[0.4, 0.6, 0.7]),
        }
    }
    # Execute
    (row,) = summary(results, planned_rounds=4, seeds=[0, 1, 2])
    # Assert
    assert row["seeds"] == "3 of 3"
    assert row["final test acc. (%), mean ± std"] == "62.0 ± 5.3"  # 64, 66, 56
    assert row["last 3 rounds (%), mean ± std"] == "57.6 ± 3.5"  # 60.33, 58.67, 53.67
    assert row["GB to 50 %"] == "2.00 [2.00–2.00] (3 of 3 reached)"
    assert row["GB to 60 %"] == "3.50 [3.00–4.00] (2 of 3 reached)"
    assert row["GB to 70 %"] == "not reached (0 of 3)"
    assert row["per-client final acc. (%)"] == "50.0, 70.0, 60.0"
    assert (row["client sync"], row["serving order"], row["transport"]) == ("none", "shuffled", "messages")
    assert not any("best" in column for column in row)  # nothing selected on the test split


def test_incomplete_seeds_stay_out_of_the_rows_and_the_header_says_partial(tmp_path: Path) -> None:
    # Prepare: seed 1 of csl has 2 of 4 rounds, dsl has not started
    results = {"csl": {"0": _run([0.4, 0.5, 0.6, 0.7]), "1": _run([0.4, 0.5])}}
    plan = [("csl", 0), ("dsl", 0), ("csl", 1), ("dsl", 1)]
    settings = shared_settings(4, 0, 0, 0, "cosine")
    # Execute
    text = write_outputs(results, settings, plan, tmp_path)
    saved = json.loads((tmp_path / "compare_strategies.json").read_text())
    # Assert
    assert text.startswith("PARTIAL: 1 of 4 runs complete") and "csl/1 (2 of 4 rounds)" in text and "dsl/0, dsl/1" in text
    assert "| 1 of 2 |" in text and "70.0 ± 0.0" in text
    assert saved["status"] == {"complete": ["csl/0"], "partial": ["csl/1 (2 of 4 rounds)"], "missing": ["dsl/0", "dsl/1"]}
    assert (tmp_path / "compare_strategies.png").exists()


def test_results_with_no_complete_run_yet_are_written_as_partial(tmp_path: Path) -> None:
    # Prepare: the first round of the first run
    results = {"csl": {"0": _run([0.4])}}
    # Execute
    text = write_outputs(results, shared_settings(4, 0, 0, 0, "cosine"), [("csl", 0)], tmp_path)
    # Assert
    assert text.startswith("PARTIAL: 0 of 1 runs complete") and text.endswith("No run is complete yet.\n")
    assert (tmp_path / "compare_strategies.png").exists()


def test_keeps_only_complete_runs_with_the_optimizer_now_chosen(tmp_path: Path) -> None:
    # Prepare
    settings = shared_settings(1, 0, 0, 0, "cosine")
    results = {"csl": {"0": _run([0.5]), "1": _run([0.5])}, "dsl": {"0": _run([0.5])}}
    write_outputs(results, settings, [("csl", 0), ("csl", 1), ("dsl", 0)], tmp_path)
    # Execute
    kept = completed_results(tmp_path / "compare_strategies.json", settings, {"csl": "adam-0.001", "dsl": "sgd-0.1-warmup"})
    other = completed_results(tmp_path / "compare_strategies.json", shared_settings(2, 0, 0, 0, "cosine"), {"csl": "adam-0.001"})
    # Assert: dsl ran with an optimizer no longer chosen; other settings keep nothing
    assert kept == {"csl": results["csl"]} and other == {}


def test_reach_text_names_a_single_seed_without_a_range() -> None:
    # Execute / Assert
    assert reach_text([_run([0.6])], 0.5) == "1.00 (1 of 1 reached)"


def test_every_entry_is_a_valid_run_config_and_the_headline_shares_one_serving_order() -> None:
    # Prepare
    settings = shared_settings(10, 0, 0, 0, "cosine")
    orders = {}
    for entry in ENTRIES:
        candidate = optimizer_of(entry, dict.fromkeys(ENTRIES, "adam-0.001"))
        keys, clients = entry_keys(entry, settings, candidate, seed=1, data_dir="/data")
        # Execute
        config = parse_config(keys)
        strategy = get_strategy(config.strategy)
        orders[entry] = (strategy.sync_of(config), strategy.order_of(config), clients, config.seed, config.data_seed)
    # Assert: every method with one shared top is served in the seeded shuffle, the reference
    # rows in fixed order; the partition does not move with the seed
    for entry in ("splitfed-v2", "csl-relay", "csl", "dsl", "cse-fsl", "fsl-sage"):
        assert orders[entry][1] == "shuffled" and orders[entry][2] == 3
    assert orders["fsl-sage-ref"][1] == orders["cse-fsl-ref"][1] == "sequential"
    assert orders["csl-relay"][0] == "relay" and orders["csl"][0] == "none" and orders["splitfed-v2"][0] == "average"
    assert all(o[3] == 1 and o[4] == 0 for o in orders.values())


def test_centralised_rows_are_one_client_holding_all_data_with_sgd_and_with_adam() -> None:
    # Prepare
    settings = shared_settings(10, 0, 0, 0, "cosine")
    # Execute
    sgd, sgd_clients = entry_keys("centralised-sgd", settings, optimizer_of("centralised-sgd", {}), 0, "/data")
    adam, adam_clients = entry_keys("centralised-adam", settings, optimizer_of("centralised-adam", {}), 0, "/data")
    # Assert: the comparison's network, epochs, schedule and evaluation; one IID client
    for keys, clients in ((sgd, sgd_clients), (adam, adam_clients)):
        assert clients == 1 and keys["strategy"] == "fedavg" and keys["partition"] == "iid"
        assert (keys["model"], keys["cut"], keys["lr-schedule"], keys["num-server-rounds"], keys["eval-samples"]) == ("resnet20", "s", "cosine", 10, 0)
    assert (sgd["optimizer"], sgd["lr-warmup"], adam["optimizer"]) == ("sgd", 1, "adam")


def test_centralised_row_trains_as_a_plain_pytorch_loop() -> None:
    # Prepare: fedavg's client (the centralised row's) and a plain loop over the same seeded network
    config = parse_config({"dataset": "synthetic", "model": "resnet20", "cut": 3, "batch-size": 16, "strategy": "fedavg"} | CANDIDATES["sgd-0.05-warmup"])
    client = make_client(config, "fedavg", steps=3)
    model = torch.nn.Sequential(copy.deepcopy(client.bottom), copy.deepcopy(client.aux))
    optimizer = build_optimizer(list(model.parameters()), config)
    # Execute
    FedAvgClient(config).train(Packet(), client, 1 << 30)
    model.train()
    for step in range(3):
        x, y = client.loader.batch(step)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    # Assert: the same weights after the same three steps
    trained = torch.nn.Sequential(client.bottom, client.aux).state_dict()
    for name, value in model.state_dict().items():
        assert torch.allclose(trained[name].float(), value.float(), atol=1e-6), name


def test_sweep_header_names_the_test_images_as_the_loader_picks_them() -> None:
    # Execute / Assert
    assert sweep_test_images({"eval-samples": 0}) == "the whole 10,000-image test split"
    assert "random subset of 2000" in sweep_test_images({"eval-samples": 2000})


@pytest.mark.parametrize("entry", ["fsl-sage-ref", "cse-fsl-ref"])
def test_reference_order_rows_take_their_headline_twins_optimizer(entry: str) -> None:
    # Execute / Assert
    assert optimizer_of(entry, {entry.removesuffix("-ref"): "sgd-0.1-warmup"}) == "sgd-0.1-warmup"
