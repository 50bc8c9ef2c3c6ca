"""The stream transport on a real SuperLink and real SuperNodes on 127.0.0.1: insecure and TLS, and a node killed mid-round."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flsplit.certificates import make_certificates
from flsplit.launcher import SuperLink, SuperNode
from flsplit.results import read_metrics
from tests.plugins.marked_dsl import MARKS_ENV
from tests.traffic import Z_BATCH

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)

TINY = {
    "dataset": "'synthetic'", "model": "'resnet20'", "num-server-rounds": 1, "max-batches": 2, "batch-size": 16,
    "eval-samples": 32, "min-clients": 2, "stream-listen": "'127.0.0.1:0'",
}
TUNED = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1", "FLSPLIT_SUPERNODE_IDLE_S": "0.25"}


class Federation:
    """A deployment-mode SuperLink with two warm SuperNodes (partitions 0 and 1), stopped by PID."""

    def __init__(self, home: Path, tls: bool, env: dict[str, str] | None = None) -> None:
        self.link = SuperLink(home, simulation=False, certificates=make_certificates(home / "certs") if tls else None, env=TUNED)
        self.nodes = [SuperNode(self.link, f"node{i}", f"partition-id={i} num-partitions=2", warm=True, env=TUNED | (env or {})) for i in range(2)]

    def args(self, results: Path, name: str, **overrides: object) -> str:
        config = TINY | {"results-dir": f"'{results}'", "run-name": f"'{name}'"} | overrides
        return " ".join(f"{k}={v}" for k, v in config.items())

    def run(self, results: Path, name: str, **overrides: object) -> list[dict]:
        done = self.link.run(self.args(results, name, **overrides), timeout_s=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        path = results / name / "metrics.jsonl"
        assert path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
        return read_metrics(path)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.link.stop()


# TLS covers the stream on real SuperNodes in CI; the plain-TCP data plane runs in the full suite
@pytest.fixture(scope="module", params=[pytest.param("insecure", marks=pytest.mark.long), "tls"])
def federation(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    running = Federation(tmp_path_factory.mktemp(request.param), tls=request.param == "tls")
    try:
        yield running
    finally:
        running.stop()


def _learning(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_mb")) and not k.startswith(("bytes_", "train_messages"))} for r in rounds]


def test_csl_on_the_stream_equals_csl_on_messages(federation: Federation, tmp_path: Path) -> None:
    # Execute: the insecure federation's data plane runs plain TCP, the TLS one's TLS (stream-tls auto)
    tls = "'off'" if federation.link.certificates is None else "'auto'"
    messages = federation.run(tmp_path, "messages", strategy="'csl'")
    stream = federation.run(tmp_path, "stream", strategy="'csl'", transport="'stream'", **{"stream-tls": tls})
    # Assert
    assert _learning(stream) == _learning(messages) and stream[0]["failed_clients"] == []
    assert stream[0]["bytes_up_activations"] == stream[0]["bytes_down_gradients"] == 2 * 2 * Z_BATCH  # 2 clients x 2 batches


@pytest.mark.parametrize("strategy", ["dsl", "splitfed-v2"])
def test_a_decoupled_and_an_averaging_strategy_run_on_the_stream(federation: Federation, tmp_path: Path, strategy: str) -> None:
    # Execute
    rounds = federation.run(tmp_path, strategy, strategy=f"'{strategy}'", transport="'stream'", **{"num-server-rounds": 2})
    # Assert
    assert [r["failed_clients"] for r in rounds] == [[], []]
    assert all(r["bytes_up_activations"] == 2 * 2 * Z_BATCH for r in rounds)
    if strategy == "splitfed-v2":
        assert all(r["bytes_model_sync"] > 0 for r in rounds)


@pytest.mark.long  # CI kills a SuperNode on messages (test_deployment_e2e); this adds the stream
def test_a_supernode_killed_while_its_round_streams_is_dropped_and_the_run_completes(tmp_path: Path) -> None:
    # Prepare: TLS; the marked plug-in goes slowly from round 2 on and says when each client is in it
    marks = tmp_path / "marks"
    marks.mkdir()
    federation = Federation(tmp_path / "home", tls=True, env={MARKS_ENV: str(marks)})
    try:
        process = federation.link.launch(
            federation.args(tmp_path, "kill", strategy="'tests.plugins.marked_dsl:MarkedDSL'", transport="'stream'",
                            **{"num-server-rounds": 3, "max-batches": 6, "chunk-mb": 0.5, "message-timeout": 30, "stream-handshake-timeout": 20})
        )
        deadline = time.monotonic() + 600
        while not (marks / "round2-client1").exists():
            assert time.monotonic() < deadline and process.poll() is None, "round 2 never started streaming"
            time.sleep(0.05)
        # Execute: SIGKILL SuperNode 1, its SuperExec and its ClientApp, mid-round
        federation.nodes[1].kill()
        stdout, stderr = process.communicate(timeout=600)
    finally:
        federation.stop()
    # Assert: round 2 drops client 1 and completes; so does round 3, without it
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    rounds = read_metrics(tmp_path / "kill" / "metrics.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [r["failed_clients"] for r in rounds] == [[], [1], [1]]
    assert rounds[1]["test_accuracy"] is not None


