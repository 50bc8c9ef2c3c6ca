"""Run tracking: per-round metrics as TensorBoard scalars (``tensorboard = true``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flsplit.config import ConfigError, parse_run_config
from flsplit.progress import ProgressPoint
from flsplit.tracking import NoTracker, TensorBoardTracker, open_tracker, scalars


def _round(r: int) -> dict[str, object]:
    """One round's metrics with the kinds of values the ServerApp writes."""
    return {
        "round": r,
        "strategy": "dsl",
        "test_accuracy": 0.25 * r,
        "bytes_up": 1_000_000 * r,
        "bytes_down": 0,
        "aux_accuracy": None,
        "failed_clients": [],
        "resumed": False,
    }


def test_numeric_metrics_become_scalars_and_the_rest_is_left_out() -> None:
    # Prepare
    metrics = _round(2)
    # Execute
    values = scalars(metrics)
    # Assert: numbers only; round is the step, not a scalar; bools, None, text and lists are not numbers
    assert values == {"test_accuracy": 0.5, "bytes_up": 2_000_000.0, "bytes_down": 0.0}


def test_tensorboard_event_file_holds_every_numeric_metric_per_round(tmp_path: Path) -> None:
    # Prepare
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    tracker = TensorBoardTracker(tmp_path)
    # Execute
    for r in (1, 2):
        tracker.log(_round(r))
    tracker.close()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    # Assert
    assert sorted(events.Tags()["scalars"]) == ["bytes_down", "bytes_up", "test_accuracy"]
    accuracy = events.Scalars("test_accuracy")
    assert [(e.step, e.value) for e in accuracy] == [(1, 0.25), (2, 0.5)]
    assert [(e.step, e.value) for e in events.Scalars("bytes_up")] == [(1, 1e6), (2, 2e6)]


def test_tracking_is_off_unless_the_run_config_turns_it_on(tmp_path: Path) -> None:
    # Prepare
    config = parse_run_config({})
    # Execute
    tracker = open_tracker(config.tensorboard, tmp_path)
    tracker.log(_round(1))
    tracker.close()
    # Assert
    assert config.tensorboard is False
    assert isinstance(tracker, NoTracker)
    assert not (tmp_path / "tensorboard").exists()


def test_missing_tensorboard_package_names_the_key_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: make both imports fail as they do where the package is not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    # Execute
    with pytest.raises(ConfigError) as err:
        open_tracker(True, tmp_path)
    # Assert
    assert "tensorboard" in str(err.value) and "pip install 'flsplit[tracking]'" in str(err.value)


def test_progress_points_become_scalars_in_hundredths_of_rounds(tmp_path: Path) -> None:
    # Prepare
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    tracker = TensorBoardTracker(tmp_path)
    # Execute: 30 % into round 1, 50 % into round 2
    tracker.progress(ProgressPoint(1, 3, 10, 40.0, 7.0))
    tracker.progress(ProgressPoint(2, 5, 10, 50.0, 5.0))
    tracker.close()
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    # Assert
    assert [(e.step, e.value) for e in events.Scalars("progress/round_fraction")] == [(30, pytest.approx(0.3)), (150, 0.5)]
    assert [e.value for e in events.Scalars("progress/samples_per_s")] == [40.0, 50.0]
