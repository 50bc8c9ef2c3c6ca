"""Client weights are averaged through Flower strategy objects named in the run config."""

from __future__ import annotations

import pytest
import torch

from flsplit.aggregation import SUPPORTED, aggregate_weights, build_aggregator
from flsplit.config import ConfigError, parse_run_config

WEIGHTS = [({"w": torch.full((2, 3), float(v))}, n) for v, n in ((1.0, 10), (2.0, 10), (9.0, 20))]


@pytest.mark.parametrize("name", SUPPORTED)
def test_every_supported_flower_strategy_aggregates_tensors_to_float32(name: str) -> None:
    # Execute
    result = aggregate_weights(build_aggregator(name), 1, WEIGHTS)
    # Assert (Bulyan needs at least 4f + 3 = 3 inputs: it gets exactly that)
    assert result is not None and result["w"].dtype == torch.float32 and result["w"].shape == (2, 3)
    assert bool(((result["w"] >= 1.0) & (result["w"] <= 9.0)).all())


def test_fedavg_weights_by_examples_and_fedmedian_takes_the_median() -> None:
    assert torch.allclose(aggregate_weights(build_aggregator("FedAvg"), 1, WEIGHTS)["w"], torch.full((2, 3), 5.25))
    assert torch.equal(aggregate_weights(build_aggregator("FedMedian"), 1, WEIGHTS)["w"], torch.full((2, 3), 2.0))


@pytest.mark.parametrize(("name", "reason"), [("FedAdam", "configure_train"), ("FedXgbBagging", "XGBoost"), ("FedMagic", "unknown Flower strategy")])
def test_unusable_or_unknown_strategy_is_a_config_error_naming_the_key(name: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"aggregation": name})
    assert "- aggregation:" in str(err.value) and reason in str(err.value) and "FedMedian" in str(err.value)
