"""A simulated slow device (``flsplit.slowdown``): the sleep, where a node's factor comes from, and its reports."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from flsplit.config import ConfigError
from flsplit.data import PartitionLoader, load_dataset
from flsplit.slowdown import pad_compute
from strategies import parse_config
from apps.client_state import node_slowdown


def test_a_slow_device_sleeps_its_factor_less_one_times_the_measured_compute() -> None:
    # Prepare
    slept: list[float] = []
    # Execute / Assert
    assert pad_compute(4.0, 0.25, slept.append) == 0.75
    assert pad_compute(1.0, 0.25, slept.append) == 0.0  # full speed: no sleep at all
    assert slept == [0.75]


def _context(**node: object) -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": 1, "num-partitions": 2} | node, state=RecordDict(), run_config={})


def test_a_nodes_own_slowdown_wins_over_the_run_configs_by_partition() -> None:
    # Prepare
    config = parse_config({"slowdowns": "1,4"})
    # Execute / Assert
    assert node_slowdown(_context(), config) == 4.0
    assert node_slowdown(_context(slowdown=2), config) == 2.0
    assert node_slowdown(_context(), parse_config({})) == 1.0


@pytest.mark.parametrize("bad", [0.5, "fast", float("inf")])
def test_a_bad_node_slowdown_is_refused_naming_its_source(bad: object) -> None:
    with pytest.raises(ConfigError, match="node-config slowdown: .* is not a factor >= 1"):
        node_slowdown(_context(slowdown=bad), parse_config({}))


def test_samples_in_counts_an_epochs_short_last_batch() -> None:
    # Prepare: 10 samples in batches of 4: 4, 4, 2 per epoch
    loader = PartitionLoader(load_dataset("synthetic"), np.arange(10), 4, 0, 0)
    # Execute / Assert
    assert loader.samples_in(0, 3) == 10
    assert loader.samples_in(2, 5) == 2 + 4 + 4  # the short batch, then the next epoch's first two
    assert loader.samples_in(4, 4) == 0
