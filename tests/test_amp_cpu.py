"""The bf16-on-CPU driver's pieces: its run configs, a run's summary and the comparison (no training)."""

from __future__ import annotations

import pytest

from experiments import amp_cpu
from strategies import parse_config


def _rounds(epoch_s: list[float], accuracy: float) -> list[dict[str, float]]:
    return [{"round_s": s, "client_fwd_s": s / 4, "client_bwd_s": s / 2, "server_s": s / 8, "test_accuracy": accuracy} for s in epoch_s]


@pytest.mark.parametrize("strategy", amp_cpu.STRATEGIES)
@pytest.mark.parametrize("amp", amp_cpu.AMPS)
def test_every_run_config_is_valid_and_trains_whole_epochs_on_the_cpu(strategy: str, amp: str) -> None:
    # Execute
    config = parse_config(amp_cpu.run_config(strategy, amp, "/data", 2, 0, "/tmp/out"))
    # Assert
    assert (config.strategy, config.amp, config.device, config.max_batches, config.local_epochs) == (strategy, amp, "cpu", 0, 1)
    assert config.run_name == f"{strategy}-{amp}"


def test_summary_leaves_the_first_epoch_out_of_the_time_and_keeps_the_last_accuracy() -> None:
    # Execute
    row = amp_cpu.summarise("dsl", "bf16", _rounds([30.0, 10.0, 12.0], 0.4))
    single = amp_cpu.summarise("dsl", "off", _rounds([20.0], 0.3))
    # Assert
    assert (row["epochs"], row["epoch_s"], row["client_bwd_s"], row["test_accuracy"]) == (3, 11.0, 5.5, 0.4)
    assert single["epoch_s"] == 20.0


def test_comparison_is_against_the_same_strategys_off_run() -> None:
    # Prepare
    rows = [
        amp_cpu.summarise("dsl", "off", _rounds([1.0, 10.0], 0.40)),
        amp_cpu.summarise("dsl", "bf16", _rounds([1.0, 5.0], 0.38)),
        amp_cpu.summarise("csl", "off", _rounds([1.0, 20.0], 0.50)),
        amp_cpu.summarise("csl", "bf16", _rounds([1.0, 30.0], 0.50)),
    ]
    # Execute
    compared = amp_cpu.compare(rows)
    # Assert
    assert [r["epoch_s_vs_off"] for r in compared] == [1.0, 0.5, 1.0, 1.5]
    assert [round(r["accuracy_change_points"], 6) for r in compared] == [0.0, -2.0, 0.0, 0.0]
