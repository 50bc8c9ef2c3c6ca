"""Real SuperNodes whose ClientApp tasks fork from the warm SuperExec (apps.warm_superexec), insecure and TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flsplit import trace
from flsplit.certificates import make_certificates
from flsplit.launcher import SuperLink, SuperNode, run_config_text
from flsplit.results import read_metrics

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, SuperExecs, flwr run)

TINY = {
    "dataset": "synthetic", "model": "resnet20", "num-server-rounds": 1, "max-batches": 2, "batch-size": 32,
    "eval-samples": 32, "min-clients": 2,
}


class WarmDeployment:
    """A SuperLink with two warm SuperNodes whose ClientApps stamp every training message."""

    def __init__(self, home: Path, tls: bool) -> None:
        certificates = make_certificates(home / "certs") if tls else None
        self.link = SuperLink(home, simulation=False, certificates=certificates)
        self.stamps = [home / f"stamps{i}" for i in range(2)]
        self.nodes = []
        for i, stamps in enumerate(self.stamps):
            stamps.mkdir()
            node = SuperNode(self.link, f"node{i}", f"partition-id={i} num-partitions=2", warm=True, env={trace.TRACE_ENV: str(stamps)})
            self.nodes.append(node)

    def run(self, results: Path, strategy: str) -> list[dict]:
        config = TINY | {"strategy": strategy, "results-dir": str(results), "run-name": strategy}
        done = self.link.run(run_config_text(config), timeout_s=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return read_metrics(results / strategy / "metrics.jsonl")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.link.stop()


@pytest.fixture(scope="module", params=["insecure", "tls"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmDeployment]:
    federation = WarmDeployment(tmp_path_factory.mktemp(f"warm-{request.param}"), tls=request.param == "tls")
    try:
        yield federation
    finally:
        federation.stop()


@pytest.mark.parametrize("strategy", ["csl", "dsl"])
def test_strategy_trains_in_tasks_forked_from_the_warm_superexec(deployment: WarmDeployment, tmp_path: Path, strategy: str) -> None:
    # Execute
    rounds = deployment.run(tmp_path, strategy)
    # Assert: the round completed on both nodes
    assert [r["round"] for r in rounds] == [1]
    assert rounds[0]["num_clients"] == 2 and rounds[0]["failed_clients"] == []
    assert rounds[0]["bytes_up_activations"] > 0
    if strategy == "csl":
        assert rounds[0]["bytes_down_gradients"] > 0
    # Assert: every training message ran in its own process, forked after the app was imported
    for stamps in deployment.stamps:
        handled = trace.read(stamps, "clientapp")
        assert handled, "no training message reached this node's ClientApp"
        assert len({r["pid"] for r in handled}) == len(handled)
        assert all(r["imported"] < r["process_started"] for r in handled)
