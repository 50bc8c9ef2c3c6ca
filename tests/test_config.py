"""Run-config validation."""

import tomllib
from pathlib import Path

import pytest

from flsplit.config import ConfigError, parse_run_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_defaults_are_a_valid_complete_config() -> None:
    # Prepare
    defaults = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    # Execute
    config = parse_run_config(defaults, strategies=["csl", "dsl"])
    # Assert: every key of the model is set in pyproject, so `--run-config` can override it
    assert set(defaults) == set(config.as_run_config())
    assert config.strategy == "dsl" and config.model == "resnet20"


def test_one_error_lists_every_bad_key_with_allowed_values() -> None:
    raw = {"strategy": "sgd", "model": "resnet7", "lr": -1, "aux-head": "big", "colour": "red", "partition": "x"}
    with pytest.raises(ConfigError) as err:
        parse_run_config(raw, strategies=["csl", "dsl"])
    text = str(err.value)
    for key, allowed in [
        ("strategy", "csl"),
        ("model", "resnet110"),
        ("lr", "greater than 0"),
        ("aux-head", "linear"),
        ("colour", "valid keys"),
        ("partition", "dirichlet"),
    ]:
        assert f"- {key}:" in text and allowed in text


def test_cut_is_checked_against_the_model_depth() -> None:
    with pytest.raises(ConfigError, match="cut"):
        parse_run_config({"model": "resnet20", "cut": 9})
    assert parse_run_config({"model": "resnet110", "cut": 26}).cut_blocks == 26
    assert parse_run_config({"model": "resnet110", "cut": "s"}).cut_blocks == 12


def test_dotted_strategy_path_is_accepted_for_plugins() -> None:
    config = parse_run_config({"strategy": "mypkg.mymod:MyStrategy"}, strategies=["csl"])
    assert config.strategy == "mypkg.mymod:MyStrategy"


def test_strategy_keys_are_validated_with_the_key_named() -> None:
    raw = {"upload-every": 0, "align-every": 0, "align-lr": 0, "hybrid-k": 0, "hybrid-lambda": -1}
    with pytest.raises(ConfigError) as err:
        parse_run_config(raw)
    for key in raw:
        assert f"- {key}:" in str(err.value)


def test_hybrid_without_any_loss_is_rejected() -> None:
    with pytest.raises(ConfigError, match="hybrid-aux-weight: .*no loss to train on"):
        parse_run_config({"strategy": "hybrid", "hybrid-lambda": 0.0, "hybrid-aux-weight": 0.0})
    assert parse_run_config({"strategy": "dsl", "hybrid-lambda": 0.0, "hybrid-aux-weight": 0.0}).strategy == "dsl"
