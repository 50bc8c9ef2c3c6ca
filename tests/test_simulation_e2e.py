"""End to end through ``flwr run`` on a real SuperLink in simulation mode (tiny model, synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flsplit.config import parse_run_config
from flsplit.launcher import SuperLink
from flsplit.results import read_metrics
from flsplit.wire import Packet, encode, serialized_size, weights_of
from strategies import get_strategy

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)

REQUIRED = {
    "round", "strategy", "test_accuracy", "test_loss", "train_loss", "aux_accuracy", "bytes_up", "bytes_down",
    "bytes_up_activations", "bytes_up_labels", "bytes_down_gradients", "bytes_model_sync",
    "client_fwd_s", "client_bwd_s", "server_s", "comm_s",
}



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


def test_dsl_trains_two_rounds_and_sends_nothing_down(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "dsl", strategy="'dsl'")
    # Assert
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert REQUIRED <= set(r)
        assert r["bytes_down"] == 0 and r["bytes_down_gradients"] == 0 and r["bytes_model_sync"] == 0
        assert r["bytes_up_activations"] > 2 * 3 * 16 * 16 * 32 * 32 * 4  # 2 clients x 3 batches of z
        assert r["bytes_up_labels"] > 0 and 0.0 <= r["aux_accuracy"] <= 1.0
        assert r["failed_clients"] == []
    config = json.loads((tmp_path / "dsl" / "config.json").read_text())
    assert config["strategy"] == "dsl" and config["num_clients"] == 2
    # the simulation-runtime fixes reach a plain `flwr run`: equal priority, pickup on push
    processes = config["processes"]
    assert processes["client_nice"] == [processes["server_nice"]] * 2 and processes["simulation_pickup"] == "push"


def test_csl_gradient_bytes_equal_activation_bytes_up_to_framing(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "csl", strategy="'csl'")
    # Assert
    for r in rounds:
        assert REQUIRED <= set(r) and r["aux_accuracy"] is None
        assert r["bytes_down_gradients"] > 0
        assert abs(r["bytes_down_gradients"] - r["bytes_up_activations"]) < 64 * 6  # 6 batches
        assert r["bytes_down"] == r["bytes_down_gradients"]


def test_aggregated_slices_with_dirichlet_partitions(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "agg", strategy="'dsl'", partition="'dirichlet'", **{"aggregate-clients": "true", "dirichlet-alpha": 0.5})
    # Assert: each client uploads its slice and head and gets the average back
    for r in rounds:
        assert r["bytes_model_sync"] > 0
        assert r["bytes_down"] == r["bytes_model_sync"] - (r["bytes_up"] - r["bytes_up_activations"] - r["bytes_up_labels"])


def test_bad_run_config_stops_before_training_naming_every_key(superlink: SuperLink, tmp_path: Path) -> None:
    done = superlink.run(f"lr=-1.0 strategy='magic' results-dir='{tmp_path}'")
    output = done.stdout + done.stderr
    assert "lr" in output and "strategy" in output and "choose one of" in output
    assert not list(tmp_path.glob("*/metrics.jsonl"))


# --- the strategy family: what each one puts on the wire --------------------------------------

Z_BATCH = 16 * 16 * 32 * 32 * 4  # one batch of activations at cut s of resnet20 (16 x 16x32x32 floats)
FRAMING = 2048  # array and record headers per message, generously


def _weights_bytes(strategy: str, modules: tuple[str, ...]) -> int:
    """Serialized size of one upload of ``modules`` of the strategy's client (a ``weights`` record).

    Random values: Flower ships identical arrays once, and a fresh model has many (BatchNorm's
    ones and zeros) that training makes distinct.
    """
    config = parse_run_config({"dataset": "synthetic", "strategy": strategy})
    every = get_strategy(strategy).client_modules(config)
    weights = {k: torch.randn_like(v) for k, v in weights_of({m: every[m] for m in modules}).items()}
    return serialized_size(encode(Packet({"weights": weights}))["weights"])


def test_fsl_sage_sends_no_gradients_and_an_aligned_model_in_alignment_rounds(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: uploads at local iterations 0 and 2 of 3; alignment every 2 rounds, from round 1
    # (the reference's t = 0) on the round's first upload
    rounds = _run(superlink, tmp_path, "sage", strategy="'fsl-sage'", **{"upload-every": 2, "align-every": 2, "align-epochs": 2, "align-buffer": 24})
    # Assert
    slice_bytes, aux_bytes = _weights_bytes("fsl-sage", ("bottom",)), _weights_bytes("fsl-sage", ("aux",))
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_down_gradients"] == 0
        assert 2 * 2 * Z_BATCH <= r["bytes_up_activations"] < 2 * 2 * Z_BATCH + 4 * FRAMING
        assert r["bytes_up_labels"] > 0
        assert 3 * slice_bytes < r["bytes_model_sync"] <= 4 * slice_bytes  # slices only, no aux head
    assert 1.5 * aux_bytes < rounds[0]["bytes_down_aux_model"] <= 2 * aux_bytes  # one aligned model per client
    assert rounds[0]["align_after_cosine"] is not None
    assert rounds[1]["bytes_down_aux_model"] == 0 and rounds[1]["align_after_cosine"] is None


def test_cse_fsl_sends_every_second_batch_up_and_nothing_but_averages_down(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "cse", strategy="'cse-fsl'", **{"upload-every": 2})
    # Assert
    both = _weights_bytes("cse-fsl", ("bottom", "aux"))
    for r in rounds:
        assert r["bytes_down_gradients"] == 0 and r["bytes_down_aux_model"] == 0
        assert 2 * 2 * Z_BATCH <= r["bytes_up_activations"] < 2 * 2 * Z_BATCH + 4 * FRAMING
        assert 3 * both < r["bytes_model_sync"] <= 4 * both  # slices and heads, up and down
        assert r["bytes_down"] == r["bytes_model_sync"] - (r["bytes_up"] - r["bytes_up_activations"] - r["bytes_up_labels"])


def test_splitfed_v1_sends_every_gradient_and_averages_slices(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "sfv1", strategy="'splitfed-v1'")
    # Assert
    for r in rounds:
        assert r["failed_clients"] == [] and r["aux_accuracy"] is None
        assert abs(r["bytes_down_gradients"] - r["bytes_up_activations"]) < 64 * 6
        assert r["bytes_model_sync"] > 0


def test_splitfed_v2_with_flower_fedmedian_aggregation(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "sfv2", strategy="'splitfed-v2'", aggregation="'FedMedian'")
    # Assert
    config = json.loads((tmp_path / "sfv2" / "config.json").read_text())
    assert config["aggregation"] == "FedMedian" and config["aggregate-clients"] is False
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_down_gradients"] > 0 and r["bytes_model_sync"] > 0


def test_hybrid_gets_a_gradient_for_every_kth_batch(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: k = 3 over 3 batches: one gradient per client and round
    rounds = _run(superlink, tmp_path, "hybrid", strategy="'hybrid'", **{"hybrid-k": 3, "hybrid-lambda": 0.5})
    # Assert
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_model_sync"] == 0
        assert 2 * 3 * Z_BATCH <= r["bytes_up_activations"] < 2 * 3 * Z_BATCH + 4 * FRAMING
        assert 2 * Z_BATCH <= r["bytes_down_gradients"] < 2 * Z_BATCH + 2 * FRAMING


def test_fedavg_sends_whole_models_and_no_activations(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "fedavg", strategy="'fedavg'")
    # Assert: the whole network (slice + upper part) goes up from each client and comes back down
    whole = _weights_bytes("fedavg", ("bottom", "aux"))
    for r in rounds:
        assert r["failed_clients"] == [] and r["train_messages"] == 2  # one message per client
        assert r["bytes_up_activations"] == r["bytes_up_labels"] == r["bytes_down_gradients"] == 0
        assert r["bytes_up"] == r["bytes_down"] == r["bytes_model_sync"] / 2
        assert 3 * whole < r["bytes_model_sync"] <= 4 * whole
        assert abs(r["test_accuracy"] - r["aux_accuracy"]) <= 1 / 48  # the same averaged network


def test_out_of_tree_plugin_strategy_runs_end_to_end(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "noisy", strategy="'examples.noisy_activations:NoisyDSL'", **{"noisy-scale": 0.2})
    config = json.loads((tmp_path / "noisy" / "config.json").read_text())
    assert config["noisy-scale"] == 0.2  # the plug-in's own key reached the run
    # Assert: DSL's ledger
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_down"] == 0
        assert 2 * 3 * Z_BATCH <= r["bytes_up_activations"] < 2 * 3 * Z_BATCH + 4 * FRAMING


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
