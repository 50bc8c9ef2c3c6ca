"""A simulated slow device: a client with slowdown ``s`` takes ``s`` times as long per training step.

The ClientApp measures each upload's compute (forward and backward passes, the ``fwd``/``bwd``
timings of ``ClientSlice.watch``; for CSL the backward pass on the server's gradient is in
``bwd`` too) and then sleeps ``(s - 1)`` times that before the upload goes. A sleep gives the
wall time of a slower device without taking CPU from the other parties: busy work on a machine
with few cores would slow every client, not only this one. The slept seconds are reported apart
(``client_slowdown_s``), so no one mistakes them for compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flsplit.config import ConfigError, slowdown_factor


def parse_slowdown(value: object, source: str) -> float:
    """``value`` as a slowdown factor (>= 1); anything else is a ``ConfigError`` naming ``source``."""
    try:
        return slowdown_factor(value)
    except ValueError as err:
        raise ConfigError(f"invalid run config:\n  - {source}: {err}") from None


def pad_compute(factor: float, compute_s: float, sleep: Callable[[float], None] = time.sleep) -> float:
    """Sleep ``(factor - 1) * compute_s`` seconds, as a device ``factor`` times slower would compute; return them."""
    slept = (factor - 1.0) * max(compute_s, 0.0)
    if slept > 0:
        sleep(slept)
    return slept
