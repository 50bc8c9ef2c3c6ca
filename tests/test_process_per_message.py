"""Nothing is simulation-only: a run is the same when every message lands in a fresh process.

The real ServerApp ``main`` and ClientApp handlers run in this process over an in-process grid,
once reusing the ClientApp's live objects between messages (as Ray workers do) and once
dropping them before every message (as deployment does, a process per message). Every piece
of client state a strategy needs must then come back from ``context.state``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.in_process_grid import run_server_app

pytestmark = pytest.mark.usefixtures("task_identity")

# Everything but wall-clock, memory and control-record readings.
COMPARED = (
    "test_accuracy", "test_loss", "aux_accuracy", "train_loss", "aux_train_loss", "bytes_up", "bytes_down",
    "bytes_up_activations", "bytes_up_labels", "bytes_down_gradients", "bytes_model_sync", "bytes_down_aux_model",
    "train_messages", "align_after_cosine",
)


def _run(tmp_path: Path, strategy: str, fresh_process: bool) -> list[dict]:
    run_config = {
        "strategy": strategy, "dataset": "synthetic", "model": "resnet20", "num-server-rounds": 2, "max-batches": 3,
        "batch-size": 16, "eval-samples": 32, "chunk-mb": 1.5, "upload-every": 2, "align-every": 1, "align-epochs": 2,
        "hybrid-k": 2, "hybrid-lambda": 0.5, "run-name": f"{strategy}-{'fresh' if fresh_process else 'cached'}",
    }
    return run_server_app(run_config, tmp_path, fresh_process=fresh_process)


@pytest.mark.slow  # over 5 s
@pytest.mark.parametrize("strategy", ["fsl-sage", "hybrid", "fedavg"])
def test_a_process_per_message_gives_the_same_run_as_reused_live_objects(strategy: str, tmp_path: Path) -> None:
    # Execute
    cached = _run(tmp_path, strategy, fresh_process=False)
    fresh = _run(tmp_path, strategy, fresh_process=True)
    # Assert
    assert [r["round"] for r in fresh] == [1, 2] and all(r["failed_clients"] == [] for r in fresh)
    for a, b in zip(cached, fresh):
        for key in COMPARED:
            same = a.get(key) == b.get(key) or (isinstance(a.get(key), float) and math.isclose(a[key], b[key], rel_tol=1e-6))
            assert same or (a.get(key) != a.get(key) and b.get(key) != b.get(key)), (key, a.get(key), b.get(key))  # NaN == NaN
