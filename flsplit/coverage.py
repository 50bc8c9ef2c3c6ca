"""Which clients a round's test accuracy covers, and whether that is fewer than the federation.

After a client fails, the accuracy of the following rounds is scored on the remaining
clients' slices only; the ServerApp's log line and ``flsplit compare`` mark such rounds so a
figure over part of the federation is not read as one over all of it.
"""

from __future__ import annotations

from typing import Any


def covers_fewer_clients(metrics: dict[str, Any]) -> bool:
    """Whether a scored round's ``evaluated_clients`` are fewer than its ``num_clients``.

    Round 1 normally covers every client, so these are the rounds not comparable with it.
    Rounds written before ``evaluated_clients`` existed count as covering every client.
    """
    evaluated = metrics.get("evaluated_clients")
    return metrics.get("test_accuracy") is not None and evaluated is not None and len(evaluated) < int(metrics.get("num_clients", 0))
