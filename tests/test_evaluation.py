"""What evaluation costs: ``eval-every`` skips rounds (never the last), ``eval-wire-dtype`` sets
how test-split activations travel. Run in process, through Flower's protobuf serialization."""

from __future__ import annotations

from pathlib import Path

import pytest

from flsplit.config import ConfigError, RunConfig, parse_run_config
from tests.in_process_grid import run_server_app
from apps.server_app import changed_keys

TINY = {
    "dataset": "synthetic", "model": "resnet20", "strategy": "dsl", "num-server-rounds": 3, "max-batches": 2,
    "batch-size": 16, "eval-samples": 64, "chunk-mb": 1.5,
}


@pytest.mark.parametrize(("every", "rounds", "scored"), [(1, 3, [1, 2, 3]), (2, 5, [2, 4, 5]), (10, 3, [3])])
def test_eval_every_scores_every_nth_round_and_always_the_last(every: int, rounds: int, scored: list[int]) -> None:
    # Prepare
    config = RunConfig(**{"eval-every": every, "num-server-rounds": rounds})
    # Execute / Assert
    assert [r for r in range(1, rounds + 1) if config.scores_round(r)] == scored


def test_eval_wire_dtype_defaults_to_the_runs_wire_dtype_and_a_bad_one_names_the_key() -> None:
    # Execute / Assert
    assert RunConfig(**{"wire-dtype": "fp16"}).eval_wire == "fp16"
    assert RunConfig(**{"wire-dtype": "fp16", "eval-wire-dtype": "bf16"}).eval_wire == "bf16"
    with pytest.raises(ConfigError, match="eval-wire-dtype"):
        parse_run_config({"eval-wire-dtype": "fp8"})
    with pytest.raises(ConfigError, match="eval-every"):
        parse_run_config({"eval-every": 0})


def test_a_resumed_run_may_change_eval_every_but_not_eval_wire_dtype() -> None:
    # Prepare
    saved = RunConfig().as_run_config()
    # Execute / Assert: which rounds are scored leaves the scores of the others as they were
    assert changed_keys(RunConfig(**{"eval-every": 5}), saved) == []
    assert changed_keys(RunConfig(**{"eval-wire-dtype": "bf16"}), saved) == ["eval-wire-dtype"]


@pytest.mark.usefixtures("task_identity")
@pytest.mark.slow  # three in-process runs of a few seconds each
def test_skipped_rounds_move_no_test_activations_and_bf16_halves_them(tmp_path: Path) -> None:
    # Execute
    every_round = run_server_app(TINY | {"run-name": "fp32"}, tmp_path, through_protobuf=True)
    skipping = run_server_app(TINY | {"run-name": "skip", "eval-every": 2}, tmp_path, through_protobuf=True)
    bf16 = run_server_app(TINY | {"run-name": "bf16", "eval-wire-dtype": "bf16"}, tmp_path, through_protobuf=True)
    # Assert: a skipped round still sends each client its checkpoint order (down), but no client
    # embeds the test split, and its test metrics are null; the scored rounds are the same runs'
    assert [r["test_accuracy"] is None for r in skipping] == [True, False, False]
    assert skipping[0]["test_loss"] is None and skipping[0]["bytes_eval_down"] > 0
    assert skipping[0]["bytes_eval_up"] < every_round[0]["bytes_eval_up"] / 100
    assert [r["test_accuracy"] for r in skipping[1:]] == [r["test_accuracy"] for r in every_round[1:]]
    # bf16 halves the activation bytes up (plus framing), and training is untouched
    for full, half in zip(every_round, bf16, strict=True):
        assert 0.49 < half["bytes_eval_up"] / full["bytes_eval_up"] < 0.55
        assert half["bytes_up"] == full["bytes_up"] and half["train_loss"] == full["train_loss"]
        assert abs(half["test_accuracy"] - full["test_accuracy"]) <= 2 / 64  # at most 2 of 64 argmaxes flip
