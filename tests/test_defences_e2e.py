"""The three defences together through ``flwr run`` on a real SuperLink (simulation, synthetic data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from flsplit.launcher import SuperLink
from flsplit.results import read_metrics

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)


def test_csl_with_noise_nopeek_and_label_dp_runs_through_flwr(superlink: SuperLink, tmp_path: Path) -> None:
    # Prepare
    config = {
        "strategy": "'csl'", "dataset": "'synthetic'", "model": "'resnet20'", "num-server-rounds": 2, "max-batches": 3,
        "batch-size": 16, "eval-samples": 48, "results-dir": f"'{tmp_path}'", "run-name": "'defended'",
        "activation-noise": 0.3, "nopeek-weight": 0.5, "label-dp": "'rr'", "label-dp-epsilon": 2.0,
    }
    # Execute
    done = superlink.run(" ".join(f"{k}={v}" for k, v in config.items()))
    # Assert: both rounds trained and scored every client, and config.json records the defences
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    rounds = read_metrics(tmp_path / "defended" / "metrics.jsonl")
    assert [r["round"] for r in rounds] == [1, 2], output
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_up_labels"] > 0 and r["bytes_down_gradients"] > 0
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_accuracy"])
    recorded = json.loads((tmp_path / "defended" / "config.json").read_text())
    assert (recorded["activation-noise"], recorded["nopeek-weight"], recorded["label-dp"], recorded["label-dp-epsilon"]) == (0.3, 0.5, "rr", 2.0)
    assert json.loads((tmp_path / "defended" / "status.json").read_text())["state"] == "completed"
