"""U-shaped splits through ``flwr run`` in simulation, on both transports: labels stay on the clients."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flsplit.launcher import SuperLink
from tests.test_transport_e2e import TINY, _learning, _run

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, flwr run)

Z1_BATCH = 16 * 16 * 32 * 32 * 4  # one batch of z1 at resnet20's cut s (as tests/traffic.Z_BATCH)
Z2_BATCH = 16 * 64 * 8 * 8 * 4  # one batch of z2: the last block's output, the classifier's input


@pytest.mark.parametrize("strategy", ["csl-u", pytest.param("dsl-u", marks=pytest.mark.long)])  # csl-u covers the topology in CI
def test_u_shaped_runs_on_both_transports_with_no_label_on_the_wire(superlink: SuperLink, tmp_path: Path, strategy: str) -> None:
    # Execute
    messages = _run(superlink, tmp_path, "messages", strategy=f"'{strategy}'", transport="'messages'")
    stream = _run(superlink, tmp_path, "stream", strategy=f"'{strategy}'", transport="'stream'")
    # Assert: the same training on both transports, and every client in every round
    assert _learning(stream) == _learning(messages)
    assert len(messages) == TINY["num-server-rounds"]
    for r in messages + stream:
        assert r["failed_clients"] == [] and r["evaluated_clients"] == [0, 1]
        assert math.isfinite(r["test_accuracy"]) and math.isfinite(r["train_loss"])
        # no label leaves a client, in training or evaluation
        assert r["bytes_up_labels"] == 0 and r["bytes_eval_up_labels"] == 0
        # 2 clients x 3 batches: z1 up, z2 down, dL/dz2 up; dL/dz1 down for csl-u alone
        assert r["bytes_down_activations"] > 0 and r["bytes_up_gradients"] > 0
        assert (r["bytes_down_gradients"] > 0) == (strategy == "csl-u")
    for r in stream:  # the stream's ledger counts the payload exactly
        assert r["bytes_up_activations"] == 2 * 3 * Z1_BATCH
        assert r["bytes_down_activations"] == r["bytes_up_gradients"] == 2 * 3 * Z2_BATCH
        assert r["bytes_down_gradients"] == (2 * 3 * Z1_BATCH if strategy == "csl-u" else 0)
