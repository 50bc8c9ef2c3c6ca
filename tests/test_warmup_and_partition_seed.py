"""``lr-warmup`` in the round schedule, and ``partition-seed`` apart from ``seed``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flsplit.config import parse_run_config
from flsplit.data import load_dataset
from flsplit.optim import round_lr
from apps import client_state


def test_warmup_climbs_linearly_then_cosine_spans_the_remaining_rounds() -> None:
    # Prepare
    config = parse_run_config({"lr": 0.1, "lr-schedule": "cosine", "lr-warmup": 2, "num-server-rounds": 6})
    # Execute
    rates = [round_lr(config, r) for r in range(1, 7)]
    # Assert: 0.1/3, 0.2/3, then cosine over 4 rounds from the full rate
    expected = [0.1 / 3, 0.2 / 3] + [0.1 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert rates == pytest.approx(expected)


def test_no_warmup_leaves_the_schedule_as_it_was() -> None:
    # Prepare
    config = parse_run_config({"lr": 0.1, "lr-schedule": "cosine", "num-server-rounds": 4})
    # Execute / Assert
    assert [round_lr(config, r) for r in (1, 3)] == pytest.approx([0.1, 0.05])


def _partition(**keys: object) -> np.ndarray:
    config = parse_run_config({"dataset": "synthetic", "partition": "dirichlet", "dirichlet-alpha": 0.5} | keys)
    return client_state._partition(config, "", 0, 3)


def test_partition_follows_seed_unless_partition_seed_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: one dataset whatever the seed (the synthetic set is itself drawn from the seed)
    fixed = load_dataset("synthetic", "", 0)
    monkeypatch.setattr(client_state, "_dataset", lambda *args: fixed)
    client_state._partition.cache_clear()
    # Execute
    seed0, seed1 = _partition(seed=0), _partition(seed=1)
    pinned0, pinned1 = _partition(seed=0, **{"partition-seed": 0}), _partition(seed=1, **{"partition-seed": 0})
    # Assert: -1 (the default) follows seed, so old runs keep their partitions
    assert not np.array_equal(seed0, seed1)
    assert np.array_equal(pinned0, seed0) and np.array_equal(pinned1, seed0)
