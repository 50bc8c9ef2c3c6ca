"""What each strategy of the family puts on the wire, run in process (no Flower processes).

The real ServerApp ``main`` and ClientApp handlers exchange every message, reply and node
``Context`` through Flower's protobuf serialization (``InProcessGrid(through_protobuf=True)``),
with the run settings ``tests/test_simulation_e2e.py`` uses for its ``flwr run``s. The ledger is
flsplit's own (``flsplit/ledger.py``), the same whatever carries the messages; that the real
stack carries these messages is pinned by the ``flwr run`` tests (simulation and deployment).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.in_process_grid import run_server_app
from tests.traffic import FRAMING, REQUIRED, Z_BATCH, weights_bytes

pytestmark = [pytest.mark.usefixtures("task_identity"), pytest.mark.slow]  # a few seconds each

#: The settings of ``test_simulation_e2e``'s runs: 2 rounds of 3 batches of 16 per client, 2 clients.
TINY = {
    "dataset": "synthetic", "model": "resnet20", "num-server-rounds": 2, "max-batches": 3,
    "batch-size": 16, "eval-samples": 48, "chunk-mb": 1.5,
}


def _run(results: Path, name: str, **overrides: object) -> list[dict]:
    rounds = run_server_app(TINY | {"run-name": name} | overrides, results, through_protobuf=True)
    assert [r["round"] for r in rounds] == [1, 2]
    return rounds


def test_csl_gradient_bytes_equal_activation_bytes_up_to_framing(tmp_path: Path) -> None:
    # Execute
    rounds = _run(tmp_path, "csl", strategy="csl")
    # Assert
    for r in rounds:
        assert REQUIRED <= set(r) and r["aux_accuracy"] is None
        assert r["bytes_down_gradients"] > 0
        assert abs(r["bytes_down_gradients"] - r["bytes_up_activations"]) < 64 * 6  # 6 batches
        assert r["bytes_down"] == r["bytes_down_gradients"]


def test_fsl_sage_sends_no_gradients_and_an_aligned_model_in_alignment_rounds(tmp_path: Path) -> None:
    # Execute: uploads at local iterations 0 and 2 of 3; alignment every 2 rounds, from round 1
    # (the reference's t = 0) on the round's first upload
    rounds = _run(tmp_path, "sage", strategy="fsl-sage", **{"upload-every": 2, "align-every": 2, "align-epochs": 2, "align-buffer": 24})
    # Assert
    slice_bytes, aux_bytes = weights_bytes("fsl-sage", ("bottom",)), weights_bytes("fsl-sage", ("aux",))
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_down_gradients"] == 0
        assert 2 * 2 * Z_BATCH <= r["bytes_up_activations"] < 2 * 2 * Z_BATCH + 4 * FRAMING
        assert r["bytes_up_labels"] > 0
        assert 3 * slice_bytes < r["bytes_model_sync"] <= 4 * slice_bytes  # slices only, no aux head
    assert 1.5 * aux_bytes < rounds[0]["bytes_down_aux_model"] <= 2 * aux_bytes  # one aligned model per client
    assert rounds[0]["align_after_cosine"] is not None
    assert rounds[1]["bytes_down_aux_model"] == 0 and rounds[1]["align_after_cosine"] is None


def test_cse_fsl_sends_every_second_batch_up_and_nothing_but_averages_down(tmp_path: Path) -> None:
    # Execute
    rounds = _run(tmp_path, "cse", strategy="cse-fsl", **{"upload-every": 2})
    # Assert
    both = weights_bytes("cse-fsl", ("bottom", "aux"))
    for r in rounds:
        assert r["bytes_down_gradients"] == 0 and r["bytes_down_aux_model"] == 0
        assert 2 * 2 * Z_BATCH <= r["bytes_up_activations"] < 2 * 2 * Z_BATCH + 4 * FRAMING
        assert 3 * both < r["bytes_model_sync"] <= 4 * both  # slices and heads, up and down
        assert r["bytes_down"] == r["bytes_model_sync"] - (r["bytes_up"] - r["bytes_up_activations"] - r["bytes_up_labels"])


def test_splitfed_v1_sends_every_gradient_and_averages_slices(tmp_path: Path) -> None:
    # Execute
    rounds = _run(tmp_path, "sfv1", strategy="splitfed-v1")
    # Assert
    for r in rounds:
        assert r["failed_clients"] == [] and r["aux_accuracy"] is None
        assert abs(r["bytes_down_gradients"] - r["bytes_up_activations"]) < 64 * 6
        assert r["bytes_model_sync"] > 0


def test_splitfed_v2_with_flower_fedmedian_aggregation(tmp_path: Path) -> None:
    # Execute
    rounds = _run(tmp_path, "sfv2", strategy="splitfed-v2", aggregation="FedMedian")
    # Assert
    config = json.loads((tmp_path / "sfv2" / "config.json").read_text())
    assert config["aggregation"] == "FedMedian" and config["aggregate-clients"] is False
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_down_gradients"] > 0 and r["bytes_model_sync"] > 0


def test_hybrid_gets_a_gradient_for_every_kth_batch(tmp_path: Path) -> None:
    # Execute: k = 3 over 3 batches: one gradient per client and round
    rounds = _run(tmp_path, "hybrid", strategy="hybrid", **{"hybrid-k": 3, "hybrid-lambda": 0.5})
    # Assert
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_model_sync"] == 0
        assert 2 * 3 * Z_BATCH <= r["bytes_up_activations"] < 2 * 3 * Z_BATCH + 4 * FRAMING
        assert 2 * Z_BATCH <= r["bytes_down_gradients"] < 2 * Z_BATCH + 2 * FRAMING
