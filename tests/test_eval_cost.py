"""The evaluation-cost driver's pieces: its run configs, a run's summary and the comparison (no training)."""

from __future__ import annotations

from experiments import eval_cost
from strategies import parse_config


def _rounds(scored: list[bool], eval_s: float, train_s: float = 30.0) -> list[dict[str, object]]:
    return [
        {
            "round_s": train_s, "eval_s": eval_s if s else 0.5, "test_accuracy": 0.4 if s else None,
            "bytes_eval_up": 1.3e9 if s else 100, "train_loss": 1.5,
        }
        for s in scored
    ]


def test_every_variant_is_a_valid_run_config_that_scores_the_whole_test_split() -> None:
    for name, keys in eval_cost.variants(3).items():
        # Execute
        config = parse_config(eval_cost.run_config(name, keys, "/data", 3, "/tmp/out"))
        # Assert
        assert (config.eval_samples, config.aggregate_clients, config.run_name) == (0, False, name)
        assert (config.eval_wire, config.eval_every) == (keys["eval-wire-dtype"], keys["eval-every"])


def test_evaluation_per_round_counts_the_skipped_rounds_and_the_comparison_is_against_before() -> None:
    # Prepare
    before = eval_cost.summarise("before", _rounds([True, True], eval_s=40.0))
    skipping = eval_cost.summarise("every-2", _rounds([False, True], eval_s=40.0))
    # Execute
    rows = eval_cost.compare([before, skipping])
    # Assert
    assert (skipping["rounds scored"], skipping["evaluation per scored round (s)"]) == (1, 40.0)
    assert skipping["evaluation per round, whole run (s)"] == 20.25
    assert rows[1]["evaluation vs before"] == 20.25 / 40.0
    assert rows[1]["same training"] and rows[1]["accuracy change (points)"] == 0.0
    assert before["evaluation / training"] == 40.0 / 30.0
