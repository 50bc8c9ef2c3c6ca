"""Asynchronous DSL through ``flwr run`` in simulation, on the stream: a 4x straggler does not hold a round up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsplit.launcher import SuperLink
from tests.test_transport_e2e import _learning, _run

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, flwr run)

#: 2 clients of 4 batches, one batch per upload, the second client 4x slow; a round closes on the first to finish.
ASYNC = {
    "strategy": "'dsl'", "transport": "'stream'", "max-batches": 4, "chunk-mb": 0.5, "eval-samples": 32,
    "slowdowns": "'1,4'", "asynchronous": "true", "quorum": 1,
}


def test_an_asynchronous_round_closes_without_the_straggler_and_reproduces_under_the_virtual_clock(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: twice under the virtual clock, once on the wall clock
    first = _run(superlink, tmp_path, "virtual-1", **ASYNC, **{"virtual-clock": "true"})
    second = _run(superlink, tmp_path, "virtual-2", **ASYNC, **{"virtual-clock": "true"})
    wall = _run(superlink, tmp_path, "wall", **ASYNC)
    # Assert: the virtual clock fixes the result; every round closed when the fast client finished
    assert _learning(second) == _learning(first)
    for r in first:
        assert (r["round_close"], r["finished_clients"], r["late_uploads"], r["failed_clients"]) == ("quorum", [0], 1, [])
        assert r["server_samples"] == 4 * 16  # the fast client's epoch; the straggler's one upload came after the close
    # on the wall clock the straggler, sleeping 3x its compute per batch, is still mid-epoch at the close:
    # the close drops its one upload in flight (which the straggler did train on)
    for r in wall:
        assert (r["round_close"], r["finished_clients"], r["late_uploads"], r["failed_clients"]) == ("quorum", [0], 1, [])
        assert r["server_samples"] == r["train_samples"] - r["late_samples"] and r["client_slowdown_s"] > 0
    facts = json.loads((tmp_path / "wall" / "config.json").read_text())
    assert facts["client_slowdowns"] == [1.0, 4.0] and facts["asynchronous"] is True
