"""End to end through ``flwr run`` on a real SuperLink in simulation mode (tiny model, synthetic data).

What the other strategies put on the wire is pinned in process, through Flower's serialization
(``tests/test_strategy_traffic.py``); here are the runs that need the real stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flsplit.launcher import SuperLink
from flsplit.results import read_metrics
from tests.traffic import FRAMING, REQUIRED, Z_BATCH, weights_bytes

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)


def _run(link: SuperLink, results: Path, name: str, **overrides: object) -> list[dict]:
    config = {
        "dataset": "'synthetic'", "model": "'resnet20'", "num-server-rounds": 2, "max-batches": 3,
        "batch-size": 16, "eval-samples": 48, "chunk-mb": 1.5, "results-dir": f"'{results}'", "run-name": f"'{name}'",
    } | overrides
    done = link.run(" ".join(f"{k}={v}" for k, v in config.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = results / name / "metrics.jsonl"
    assert path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return read_metrics(path)


def test_aggregated_slices_with_dirichlet_partitions(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "agg", strategy="'dsl'", partition="'dirichlet'", **{"aggregate-clients": "true", "dirichlet-alpha": 0.5})
    # Assert: each client uploads its slice and head and gets the average back
    for r in rounds:
        assert r["bytes_model_sync"] > 0
        assert r["bytes_down"] == r["bytes_model_sync"] - (r["bytes_up"] - r["bytes_up_activations"] - r["bytes_up_labels"])


def test_relayed_csl_served_in_a_seeded_shuffle_runs_through_flwr(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "relay", strategy="'csl'", **{"client-sync": "'relay'", "serve-order": "'shuffled'"})
    # Assert: the slice is handed on (at least once a round with two clients), never averaged,
    # and one model, the last client's slice, is scored
    slice_bytes = weights_bytes("csl", ("bottom",))
    config = json.loads((tmp_path / "relay" / "config.json").read_text())
    assert (config["client_sync"], config["serving_order"]) == ("relay", "shuffled")
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_model_sync"] == 0
        assert r["bytes_model_relay"] >= 1.5 * slice_bytes and len(r["test_accuracy_per_client"]) == 1


def test_bad_run_config_stops_before_training_naming_every_key(superlink: SuperLink, tmp_path: Path) -> None:
    done = superlink.run(f"lr=-1.0 strategy='magic' results-dir='{tmp_path}'")
    output = done.stdout + done.stderr
    assert "lr" in output and "strategy" in output and "choose one of" in output
    assert not list(tmp_path.glob("*/metrics.jsonl"))


def test_fedavg_sends_whole_models_and_no_activations(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "fedavg", strategy="'fedavg'")
    # Assert: the whole network (slice + upper part) goes up from each client and comes back down
    whole = weights_bytes("fedavg", ("bottom", "aux"))
    for r in rounds:
        assert r["failed_clients"] == [] and r["train_messages"] == 2  # one message per client
        assert r["bytes_up_activations"] == r["bytes_up_labels"] == r["bytes_down_gradients"] == 0
        assert r["bytes_up"] == r["bytes_down"] == r["bytes_model_sync"] / 2
        assert 3 * whole < r["bytes_model_sync"] <= 4 * whole
        assert abs(r["test_accuracy"] - r["aux_accuracy"]) <= 1 / 48  # the same averaged network


def test_out_of_tree_plugin_dsl_trains_two_rounds_and_sends_nothing_down(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: a DSL subclass from outside the package (examples/), with a key of its own
    rounds = _run(superlink, tmp_path, "noisy", strategy="'examples.noisy_activations:NoisyDSL'", **{"noisy-scale": 0.2})
    # Assert: DSL's ledger
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert REQUIRED <= set(r)
        assert r["bytes_down"] == 0 and r["bytes_down_gradients"] == 0 and r["bytes_model_sync"] == 0
        assert 2 * 3 * Z_BATCH <= r["bytes_up_activations"] < 2 * 3 * Z_BATCH + 4 * FRAMING  # 2 clients x 3 batches of z
        assert r["bytes_up_labels"] > 0 and 0.0 <= r["aux_accuracy"] <= 1.0
        assert r["failed_clients"] == []
    config = json.loads((tmp_path / "noisy" / "config.json").read_text())
    assert config["noisy-scale"] == 0.2  # the plug-in's own key reached the run
    assert config["strategy"] == "examples.noisy_activations:NoisyDSL" and config["num_clients"] == 2
    # a plain `flwr run` gets the pickup on push; priorities stay Flower's (workers at Ray's 15)
    processes = config["processes"]
    assert processes["simulation_pickup"] == "push"
    assert processes["client_nice"] == [min(processes["server_nice"] + 15, 19)] * 2 and processes["client_threads"] == [1, 1]


def test_csl_with_bf16_autocast_on_the_cpu_reports_null_cuda_peaks(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: the device keys pass flwr run's check of declared keys, and bf16 trains on the CPU
    rounds = _run(superlink, tmp_path, "csl-bf16", strategy="'csl'", amp="'bf16'", device="'cpu'", **{"memory-probe": 1})
    # Assert
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["failed_clients"] == [] and torch.isfinite(torch.tensor(r["test_loss"])) for r in rounds)
    assert rounds[0]["client_peak_mb"] > 0 and rounds[0]["server_peak_mb"] > 0
    assert all(r["client_cuda_peak_mb"] is None and r["server_cuda_peak_mb"] is None for r in rounds)
    config = json.loads((tmp_path / "csl-bf16" / "config.json").read_text())
    assert (config["amp"], config["device"], config["server-device"], config["deterministic"]) == ("bf16", "cpu", "", False)
