"""A real SuperLink and real SuperNodes on 127.0.0.1: insecure and TLS, three strategies,
a chunk of over 100 MB, a SuperNode killed mid-run, and node authentication.

The shared deployments run their ClientApp tasks warm (``apps.warm_superexec``: a process
forked per message from a SuperExec that has imported the app); the authentication test runs
them cold (Flower's own SuperExec: a new interpreter per message), so both launchers are covered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flsplit import trace
from flsplit.certificates import make_certificates, make_node_key
from flsplit.launcher import SuperLink, SuperNode
from flsplit.results import read_metrics

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)

TINY = {
    "dataset": "'synthetic'", "model": "'resnet20'", "num-server-rounds": 1, "max-batches": 2, "batch-size": 32,
    "eval-samples": 32, "min-clients": 2,  # wait until both SuperNodes have joined
}
# Shorter task polls and SuperNode idle wait than Flower's defaults (see docs/deploy.md).
TUNED = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1", "FLSPLIT_SUPERNODE_IDLE_S": "0.25"}


def _config(results: Path, name: str, **overrides: object) -> str:
    config = TINY | {"results-dir": f"'{results}'", "run-name": f"'{name}'"} | overrides
    return " ".join(f"{k}={v}" for k, v in config.items())


class Deployment:
    """A SuperLink with two warm SuperNodes (partitions 0 and 1) whose ClientApps stamp every
    training message, stopped by PID afterwards."""

    def __init__(self, home: Path, tls: bool, cuts: tuple[str, str] | None = None) -> None:
        certificates = make_certificates(home / "certs") if tls else None
        self.link = SuperLink(home, simulation=False, certificates=certificates, env=TUNED)
        self.stamps = [home / f"stamps{i}" for i in range(2)]
        self.nodes = []
        for i, stamps in enumerate(self.stamps):
            stamps.mkdir()
            env = TUNED | {trace.TRACE_ENV: str(stamps)}
            own_cut = f" cut={cuts[i]}" if cuts else ""  # a node's own cut (issue 31), as an operator sets it
            self.nodes.append(SuperNode(self.link, f"node{i}", f"partition-id={i} num-partitions=2 data-dir=''{own_cut}", warm=True, env=env))

    def assert_tasks_forked_warm(self) -> None:
        """Every training message ran in its own process, forked after the app was imported."""
        for stamps in self.stamps:
            handled = trace.read(stamps, "clientapp")
            assert handled, "no training message reached this node's ClientApp"
            assert len({r["pid"] for r in handled}) == len(handled)
            assert all(r["imported"] < r["process_started"] for r in handled)

    def run(self, results: Path, name: str, **overrides: object) -> list[dict]:
        done = self.link.run(_config(results, name, **overrides), timeout_s=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return read_metrics(results / name / "metrics.jsonl")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.link.stop()


@pytest.fixture(scope="module", params=["insecure", "tls"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    federation = Deployment(tmp_path_factory.mktemp(request.param), tls=request.param == "tls")
    try:
        yield federation
    finally:
        federation.stop()


@pytest.mark.parametrize("strategy", ["dsl", "csl", "tests.plugins.flaky_dsl:FlakyDSL"])
def test_strategy_runs_on_real_supernodes(deployment: Deployment, tmp_path: Path, strategy: str) -> None:
    # Execute
    flaky = strategy.endswith("FlakyDSL")
    rounds = deployment.run(tmp_path, "run", strategy=f"'{strategy}'", **{"num-server-rounds": 2 if flaky else 1})
    # Assert
    assert [r["round"] for r in rounds] == ([1, 2] if flaky else [1])
    assert all(r["num_clients"] == 2 and r["bytes_up_activations"] > 0 for r in rounds)
    deployment.assert_tasks_forked_warm()
    if strategy == "csl":
        assert all(r["bytes_down_gradients"] > 0 for r in rounds)
    elif strategy == "dsl":
        assert all(r["bytes_down"] == 0 and r["failed_clients"] == [] for r in rounds)
        assert all(r["train_messages"] == 2 for r in rounds)  # one chunk per client, whatever the batch count
    else:
        assert [r["failed_clients"] for r in rounds] == [[], [1]]


@pytest.mark.parametrize("deployment", ["insecure"], indirect=True)  # one transport is enough; dsl and csl cover TLS
def test_fsl_sage_runs_on_real_supernodes_with_its_aligned_model_going_down(deployment: Deployment, tmp_path: Path) -> None:
    # Prepare: one ClientApp process per message, so every piece of client state crosses processes
    # Execute
    rounds = deployment.run(tmp_path, "sage", strategy="'fsl-sage'", **{"num-server-rounds": 2, "upload-every": 1, "align-every": 2, "align-epochs": 1})
    # Assert: the reference's schedule aligns in round 1 (t = 0), not in round 2
    assert all(r["failed_clients"] == [] and r["bytes_down_gradients"] == 0 and r["bytes_model_sync"] > 0 for r in rounds)
    assert rounds[0]["bytes_down_aux_model"] > 0 == rounds[1]["bytes_down_aux_model"]


@pytest.mark.parametrize("deployment", ["insecure"], indirect=True)  # the shared insecure deployment, as before (no TLS)
def test_upload_over_100_mb_arrives_whole(deployment: Deployment, tmp_path: Path) -> None:
    # Execute
    rounds = deployment.run(tmp_path, "bulky", strategy="'tests.plugins.bulky_dsl:BulkyDSL'", **{"chunk-mb": 128})
    # Assert: each client's single upload carried more than 100 MiB of distinct activations
    assert rounds[0]["failed_clients"] == []
    assert rounds[0]["bytes_up_activations"] > 2 * 100 * 2**20
    assert rounds[0]["train_messages"] == 2


def test_supernodes_with_their_own_cuts_train_one_averaged_network(tmp_path: Path) -> None:
    # Prepare: node 0 cuts after block 1, node 1 (a stronger device) after stage2.0 (block 4)
    federation = Deployment(tmp_path / "home", tls=False, cuts=("1", "'stage2.0'"))
    try:
        # Execute
        rounds = federation.run(tmp_path, "mixed", strategy="'dsl'", cut=1, **{"client-sync": "'average'"})
    finally:
        federation.stop()
    # Assert: each node ran its own cut, the slices were averaged layer-wise, each cut was scored
    config = json.loads((tmp_path / "mixed" / "config.json").read_text())
    assert config["client_cut_blocks"] == [1, 4]
    (only,) = rounds
    assert only["failed_clients"] == [] and only["bytes_model_sync"] > 0
    assert set(only["test_accuracy_per_cut"]) == {"1", "4"}


def test_run_completes_when_a_supernode_is_killed_mid_run(tmp_path: Path) -> None:
    # Prepare
    federation = Deployment(tmp_path / "home", tls=False)
    try:
        process = federation.link.launch(
            _config(tmp_path, "kill", strategy="'dsl'", **{"num-server-rounds": 2, "message-timeout": 20})
        )
        metrics = tmp_path / "kill" / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and process.poll() is None, "round 1 never finished"
            time.sleep(0.1)
        # Execute: SIGKILL SuperNode 1 and its ClientApp processes
        federation.nodes[1].kill()
        stdout, stderr = process.communicate(timeout=600)
    finally:
        federation.stop()
    # Assert
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    rounds = read_metrics(metrics)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["failed_clients"] == [] and rounds[-1]["failed_clients"] == [1]


def test_supernode_authentication_admits_only_registered_nodes(tmp_path: Path) -> None:
    # Prepare: TLS plus SuperNode authentication; only node 0's public key is registered. The
    # SuperNodes are cold (Flower's SuperExec starts a new ClientApp process per message).
    certificates = make_certificates(tmp_path / "certs")
    link = SuperLink(tmp_path / "home", simulation=False, certificates=certificates, env=TUNED, node_auth=True)
    nodes = []
    try:
        keys = [make_node_key(tmp_path / "keys", f"node{i}") for i in range(2)]
        link.register_node(keys[0][1])
        nodes = [
            SuperNode(link, f"node{i}", f"partition-id={i} num-partitions=2", fast=True, env=TUNED, private_key=keys[i][0], wait=False)
            for i in range(2)
        ]
        # Execute
        done = link.run(_config(tmp_path, "auth", strategy="'dsl'", **{"min-clients": 1}), timeout_s=600)
        log = nodes[1].log_path.read_text()
    finally:
        for node in nodes:
            node.stop()
        link.stop()
    # Assert: the run used the registered node only, and the other one was turned away
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rounds = read_metrics(tmp_path / "auth" / "metrics.jsonl")
    assert rounds[0]["num_clients"] == 1
    assert "SuperNode ID" not in log and "Failed to activate SuperNode" in log
