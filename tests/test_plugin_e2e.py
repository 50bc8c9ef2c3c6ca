"""A plug-in written from docs/strategies.md alone, with a key of its own, through ``flwr run``:
it trains and reports from both halves; a bad value, a bad path and an undeclared key are each
reported before anything trains, naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsplit.launcher import SuperLink
from flsplit.results import read_metrics

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, simulation, flwr run)

PLUGIN = "'tests.plugins.clipped_csl:ClippedCSL'"
TINY = {"dataset": "'synthetic'", "num-server-rounds": 1, "max-batches": 2, "batch-size": 16, "eval-samples": 32}


def _run(link: SuperLink, results: Path, name: str, **overrides: object) -> str:
    config = TINY | {"results-dir": f"'{results}'", "run-name": f"'{name}'"} | overrides
    done = link.run(" ".join(f"{k}={v}" for k, v in config.items()))
    return done.stdout + done.stderr


def test_clipping_plugin_runs_with_its_key_in_strategy_config(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: no line of the app's files edited; the key travels in strategy-config
    output = _run(superlink, tmp_path, "clipped", strategy=PLUGIN, **{"strategy-config": "'clip-norm = 0.01'"})
    # Assert: it trained; each half's metric reached metrics.jsonl; every gradient was clipped
    path = tmp_path / "clipped" / "metrics.jsonl"
    assert path.exists(), output[-3000:]
    (metrics,) = read_metrics(path)
    assert metrics["failed_clients"] == [] and metrics["returned_gradients"] == 4  # 2 clients x 2 batches
    assert metrics["client.received_gradients"] == 4
    assert metrics["client.received_norm_sum"] == pytest.approx(4 * 0.01, rel=1e-3)
    assert json.loads((tmp_path / "clipped" / "config.json").read_text())["clip-norm"] == 0.01
    # both halves' log lines (a logger below `flwr`) reach `flwr run --stream`
    assert "clipped-csl: clipped 4 of 4 gradients in round 1" in output
    assert "clipped-csl: client 0 ends round 1" in output


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"strategy": PLUGIN, "strategy-config": "'clip-norm = true'"}, "clip-norm: expected a number (got true)"),
        ({"strategy": PLUGIN, "strategy-config": "'clip-norm = -1.0'"}, "clip-norm: Input should be greater than 0"),
        ({"strategy": "'tests.plugins.nope:X'"}, "strategy: cannot import 'tests.plugins.nope:X'"),
    ],
)
def test_a_bad_plugin_value_or_path_is_reported_before_training(
    superlink: SuperLink, tmp_path: Path, overrides: dict, named: str
) -> None:
    # Execute
    output = _run(superlink, tmp_path, "bad", **overrides)
    # Assert
    assert named in output, output[-3000:]
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_an_undeclared_key_is_refused_by_flower_without_its_name(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: the plug-in's key set on its own, as flwr run only allows for declared keys
    output = _run(superlink, tmp_path, "undeclared", strategy=PLUGIN, **{"clip-norm": 0.5})
    # Assert: what Flower prints, as docs/strategies.md quotes it (apps.check names the key)
    assert "Invalid run configuration" in output and "clip-norm" not in output.replace("clip-norm=0.5", "")
    assert not (tmp_path / "undeclared").exists()
