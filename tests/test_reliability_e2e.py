"""Determinism, client failure and kill-and-resume, through ``flwr run`` on a real SuperLink."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flsplit.launcher import SuperLink
from flsplit.results import read_metrics

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)

TINY = {
    "dataset": "'synthetic'", "model": "'resnet20'", "num-server-rounds": 3, "max-batches": 4,
    "batch-size": 16, "eval-samples": 64, "chunk-mb": 1.5,
}


def _args(results: Path, name: str, **overrides: object) -> str:
    config = TINY | {"results-dir": f"'{results}'", "run-name": f"'{name}'"} | overrides
    return " ".join(f"{k}={v}" for k, v in config.items())


def _run(link: SuperLink, results: Path, name: str, **overrides: object) -> list[dict]:
    done = link.run(_args(results, name, **overrides))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return read_metrics(results / name / "metrics.jsonl")


def _without_clocks(rounds: list[dict]) -> list[dict]:
    """Metrics minus wall-clock and memory readings (``*_s``, ``*_mb``), which no two runs share."""
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_mb"))} for r in rounds]


@pytest.fixture(scope="module")
def csl_reference(superlink: SuperLink, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """One uninterrupted CSL run, the reference of both the same-seed and the resume test."""
    return _run(superlink, tmp_path_factory.mktemp("reference"), "reference", strategy="'csl'")


def test_same_seed_gives_identical_metrics(superlink: SuperLink, csl_reference: list[dict], tmp_path: Path) -> None:
    # Execute: CSL exercises the per-batch graph cache and its replay fallback
    second = _run(superlink, tmp_path, "b", strategy="'csl'")
    # Assert
    assert len(csl_reference) == 3
    assert _without_clocks(csl_reference) == _without_clocks(second)


def test_failed_client_is_recorded_and_rejoins_the_next_round(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "flaky", strategy="'tests.plugins.flaky_dsl:FlakyDSL'")
    # Assert
    assert [r["failed_clients"] for r in rounds] == [[], [1], []]
    assert "injected failure of client 1 in round 2" in rounds[1]["failures"][0]["reason"]
    assert rounds[2]["bytes_up_activations"] == rounds[0]["bytes_up_activations"]  # both clients again


def test_run_killed_mid_way_and_resumed_matches_an_uninterrupted_run(
    superlink: SuperLink, csl_reference: list[dict], tmp_path: Path
) -> None:
    # Prepare: a run on a SuperLink of its own that we kill after its first round
    link = SuperLink(tmp_path / "home-killed")
    try:
        process = link.launch(_args(tmp_path, "resumed", strategy="'csl'"))
        metrics = tmp_path / "resumed" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and process.poll() is None, "first round never finished"
            time.sleep(0.05)
    finally:
        link.kill()  # SIGKILL to SuperLink, SuperExec, ServerApp and the Ray workers
        process.kill()
        process.communicate()
    killed_after = len(read_metrics(metrics))
    assert killed_after < 3
    # Execute: another SuperLink (the shared one; the killed one is gone), the same run name, resume=true
    resumed = _run(superlink, tmp_path, "resumed", strategy="'csl'", resume="true")
    # Assert
    assert _without_clocks(resumed) == _without_clocks(csl_reference)
