"""End to end through ``flwr run`` on a real SuperLink in simulation mode (tiny model, synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path


from flsplit.results import read_metrics
from experiments.flower_runner import SuperLink

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
