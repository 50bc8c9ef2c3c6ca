"""Timing a step the same way in every micro-benchmark: the median of repeated wall-clock runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(step: Callable[[], object], repeats: int) -> float:
    """Milliseconds of ``step``, the median over ``repeats`` back-to-back calls (robust to a stray slow one)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)
