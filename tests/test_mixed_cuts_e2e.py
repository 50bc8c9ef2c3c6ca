"""Clients of two depths through ``flwr run`` in simulation: CSL and DSL, and a resumed DSL run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsplit.launcher import SuperLink
from flsplit.results import read_metrics

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)

# resnet20 cut after block 1 (16x32x32) and after block 4 (stage2.0, 32x16x16).
TINY = {
    "dataset": "'synthetic'", "model": "'resnet20'", "cut": 1, "cuts": "'1,4'", "max-batches": 3,
    "batch-size": 16, "eval-samples": 48, "chunk-mb": 1.5,
}


def _run(link: SuperLink, results: Path, name: str, **overrides: object) -> list[dict]:
    config = TINY | {"results-dir": f"'{results}'", "run-name": f"'{name}'"} | overrides
    done = link.run(" ".join(f"{k}={v}" for k, v in config.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return read_metrics(results / name / "metrics.jsonl")


def _without_clocks(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_mb"))} for r in rounds]


def test_csl_serves_two_depths_through_flwr(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "csl", strategy="'csl'", **{"num-server-rounds": 1})
    # Assert: every upload (16x32x32 or 32x16x16 per sample) got its gradient of the same shape
    # back (equal bytes but for the records' names); each cut is scored
    config = json.loads((tmp_path / "csl" / "config.json").read_text())
    assert config["client_cut_blocks"] == [1, 4] and config["cut_blocks"] == 1
    (only,) = rounds
    assert only["failed_clients"] == [] and set(only["test_accuracy_per_cut"]) == {"1", "4"}
    assert only["bytes_down_gradients"] == pytest.approx(only["bytes_up_activations"], rel=1e-4)


def test_averaged_dsl_of_two_depths_resumes_to_the_uninterrupted_run(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute: two rounds in one go; one round, then resumed for a second
    sync = {"strategy": "'dsl'", "client-sync": "'average'"}
    whole = _run(superlink, tmp_path, "whole", **sync, **{"num-server-rounds": 2})
    _run(superlink, tmp_path, "resumed", **sync, **{"num-server-rounds": 1})
    resumed = _run(superlink, tmp_path, "resumed", **sync, **{"num-server-rounds": 2}, resume="true")
    # Assert: averaged layer-wise, scored once per cut, and the resumed run repeats the whole one
    assert [r["failed_clients"] for r in whole] == [[], []]
    assert all(r["bytes_model_sync"] > 0 and set(r["test_accuracy_per_cut"]) == {"1", "4"} for r in whole)
    assert _without_clocks(resumed) == _without_clocks(whole)
