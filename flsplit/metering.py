"""Wall-clock accounting by named phase (forward, backward, server, ...)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Sums ``time.perf_counter`` intervals under names."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.total = 0.0  # all time ever measured; unlike ``seconds``, never reset

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Add the duration of the ``with`` body to ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] += elapsed
            self.total += elapsed

    def take(self) -> dict[str, float]:
        """Return the sums so far and start again from zero."""
        out = dict(self.seconds)
        self.seconds.clear()
        return out
