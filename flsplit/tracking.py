"""Run tracking: every numeric per-round metric as a TensorBoard scalar.

With the run-config key ``tensorboard = true`` the ServerApp writes an event file to
``<results-dir>/<run-name>/tensorboard/`` next to ``metrics.jsonl``; every number that goes into
``metrics.jsonl`` becomes a scalar of the same name, with the round as its step. Point
``tensorboard --logdir <results-dir>`` at the results folder to compare runs. Inside a round,
every progress line (``progress``, flsplit/progress.py) also becomes two scalars,
``progress/round_fraction`` and ``progress/samples_per_s``. TensorBoard is an
optional dependency (``pip install 'flsplit[tracking]'``), so the default costs nothing.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Any, Protocol

from flsplit.config import ConfigError
from flsplit.progress import ProgressPoint

TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    """Receives one round's metrics after they are written to ``metrics.jsonl``."""

    def log(self, metrics: dict[str, Any]) -> None:
        """Record one round's metrics."""

    def progress(self, point: ProgressPoint) -> None:
        """Record how far the current round is."""

    def close(self) -> None:
        """Flush and release whatever the tracker holds."""


class NoTracker:
    """The tracker of a run without tracking: it records nothing."""

    def log(self, metrics: dict[str, Any]) -> None:
        """Ignore ``metrics``."""

    def progress(self, point: ProgressPoint) -> None:
        """Ignore ``point``."""

    def close(self) -> None:
        """Nothing to release."""


class TensorBoardTracker:
    """Writes every numeric metric of a round as a TensorBoard scalar, step = the round.

    Parameters
    ----------
    run_dir : Path
        The run's results folder; events go to ``run_dir / "tensorboard"``.

    Raises
    ------
    ConfigError
        If the ``tensorboard`` package is not installed; the message names the run-config key
        and the extra that installs it.
    """

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional dependency
        except ImportError as err:
            raise ConfigError(
                "invalid run config:\n  - tensorboard: true needs the 'tensorboard' package "
                f"({err}); install it with pip install 'flsplit[tracking]', or set tensorboard = false"
            ) from None
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, metrics: dict[str, Any]) -> None:
        """Add one scalar per numeric value of ``metrics`` at step ``metrics["round"]``, then flush.

        Booleans, ``None``, strings and lists (such as ``failed_clients``) are not scalars and
        are left out; so is ``round`` itself, which is the step.
        """
        step = int(metrics["round"])
        for name, value in scalars(metrics).items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()

    def progress(self, point: ProgressPoint) -> None:
        """Add the round's fraction done and samples/s, at a step in hundredths of rounds (``(round - 1) * 100 + percent``)."""
        step = (point.round_number - 1) * 100 + 100 * point.done // point.total
        self._writer.add_scalar("progress/round_fraction", point.done / point.total, global_step=step)
        self._writer.add_scalar("progress/samples_per_s", point.samples_per_s, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of one round's metrics, without ``round``.

    Examples
    --------
    >>> scalars({"round": 2, "test_accuracy": 0.5, "aux_accuracy": None, "failed_clients": []})
    {'test_accuracy': 0.5}
    """
    return {
        name: float(value)
        for name, value in metrics.items()
        if name != "round" and isinstance(value, Real) and not isinstance(value, bool)
    }


def open_tracker(enabled: bool, run_dir: Path) -> Tracker:
    """The run's tracker: TensorBoard when ``enabled`` (run-config ``tensorboard``), else none."""
    return TensorBoardTracker(run_dir) if enabled else NoTracker()
