"""Run-config validation."""

import tomllib
from pathlib import Path

import pytest

from flsplit.config import ConfigError, RunConfig, parse_run_config
from strategies import get_strategy, parse_config, strategy_names

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_defaults_are_the_code_defaults_for_every_key() -> None:
    # Prepare: the defaults `flwr run` uses, and those a config built in Python gets
    defaults = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    in_code = RunConfig().as_run_config()
    built_in = [name for name in strategy_names() if get_strategy(name).__module__.startswith("strategies.")]  # not plug-ins other tests registered
    for name in [*built_in, "examples.noisy_activations:NoisyDSL"]:
        params = get_strategy(name).params
        in_code |= params().model_dump(by_alias=True) if params else {}
    # Execute
    config = parse_config(defaults, from_flower=True)
    # Assert: pyproject sets every key (so `--run-config` can override it) to the same value
    assert set(defaults) == set(in_code)
    assert {k: v for k, v in defaults.items() if v != in_code[k]} == {}
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


@pytest.mark.parametrize(
    ("strategy", "raw"),
    [("fsl-sage", {"upload-every": 0, "align-every": 0, "align-lr": 0, "lr": -1}), ("hybrid", {"hybrid-k": 0, "hybrid-lambda": -1})],
)
def test_a_strategys_own_keys_are_validated_with_the_rest_naming_each_key(strategy: str, raw: dict) -> None:
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config({"strategy": strategy} | raw)
    # Assert: one report for the strategy's keys and the shared ones
    for key in raw:
        assert f"- {key}:" in str(err.value)


def test_a_strategy_reads_its_own_settings_and_ignores_the_others() -> None:
    # Execute
    sage = parse_config({"strategy": "fsl-sage", "align-every": 3, "hybrid-k": 7})
    dsl = parse_config({"strategy": "dsl", "align-every": 3})
    # Assert
    assert sage.params.align_every == 3 and not hasattr(sage.params, "hybrid_k")
    assert sage.as_run_config()["align-every"] == 3 and "hybrid-k" not in sage.as_run_config()
    assert dsl.params is None


def test_a_flower_run_config_may_declare_keys_of_a_plugin_that_is_not_selected() -> None:
    # Prepare: a key only an unimported plug-in would read, declared in the app's pyproject
    raw = {"strategy": "dsl", "someplugin-depth": 3}
    # Execute
    config = parse_config(raw, from_flower=True)
    # Assert: ignored unless that plug-in runs; in Python, the same key is an error
    assert config.params is None and "someplugin-depth" not in config.as_run_config()
    with pytest.raises(ConfigError, match="someplugin-depth: unknown key"):
        parse_config(raw)


def test_unknown_and_misspelt_keys_are_rejected_with_the_valid_ones_listed() -> None:
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_config({"strategy": "fsl-sage", "align-evry": 3, "params": {}})
    # Assert
    assert "- align-evry: unknown key" in str(err.value) and "align-every" in str(err.value)
    assert "- params: unknown key" in str(err.value)


def test_hybrid_without_any_loss_is_rejected() -> None:
    with pytest.raises(ConfigError, match="hybrid-aux-weight: .*no loss to train on"):
        parse_config({"strategy": "hybrid", "hybrid-lambda": 0.0, "hybrid-aux-weight": 0.0})
    assert parse_config({"strategy": "dsl", "hybrid-lambda": 0.0, "hybrid-aux-weight": 0.0}).strategy == "dsl"
