"""Progress inside a round: a log line at about every 10 % of the round's batches.

A full-epoch round can run for minutes between two round lines. With ``progress = "on"`` the
server logs batches done/total, samples/s and the time left at each tenth of the round; with
``"auto"`` (the default) only in rounds whose projected length (elapsed / done x total) exceeds
``AUTO_AFTER_S``, so short rounds keep their one line; ``"off"`` never.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``progress = "auto"`` reports a round only when it is projected to take longer than this.
AUTO_AFTER_S = 60.0
#: Lines per round: one at each tenth of its batches (the round's own line closes it).
STEPS = 10


@dataclass(frozen=True)
class ProgressPoint:
    """How far a round is: batches done of its total, training throughput and time left."""

    round_number: int
    done: int
    total: int
    samples_per_s: float
    eta_s: float

    def line(self) -> str:
        """The log line."""
        return (
            f"round {self.round_number}: {self.done}/{self.total} batches ({100 * self.done / self.total:.0f} %), "
            f"{self.samples_per_s:.1f} samples/s, ETA {self.eta_s:.0f} s"
        )


class ProgressMeter:
    """Decides, as uploads come in, when a round's progress is worth a line.

    ``total`` is the round's batches over all clients (each client's ``batches_per_round``);
    ``started`` is when the round began, on the clock that ``observe`` is given.
    """

    def __init__(self, mode: str, round_number: int, total: int, started: float) -> None:
        self.mode, self.round_number, self.total, self.started = mode, round_number, total, started
        self.reported = 0  # tenths of the round already reported (or passed without a line)

    def observe(self, done: int, samples: int, now: float) -> ProgressPoint | None:
        """The point to report after ``done`` batches and ``samples`` samples, or ``None``."""
        if self.mode == "off" or not 0 < done < self.total:  # the round's own line reports its end
            return None
        tenth = done * STEPS // self.total
        if tenth <= self.reported:
            return None
        self.reported = tenth
        elapsed = max(now - self.started, 1e-9)
        projected = elapsed * self.total / done
        if self.mode == "auto" and projected <= AUTO_AFTER_S:
            return None
        return ProgressPoint(self.round_number, done, self.total, samples / elapsed, projected - elapsed)
