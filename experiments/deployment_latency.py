"""Per-message round trip and per-round wall clock of DSL and CSL on a real deployment.

Starts a SuperLink and two SuperNodes on 127.0.0.1 for each setup: Flower's defaults, and
shorter task polls (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``) with the SuperNode idle-wait patch
of ``apps.fast_supernode``. Writes ``experiments/results/deployment_latency.json``.

    python -m experiments.deployment_latency
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from experiments.tables import write_results
from flsplit.launcher import SuperLink, SuperNode
from flsplit.results import read_metrics


def measure(setup: tuple[float, float] | None, strategy: str, batches: int, work: Path) -> dict:
    """Two rounds of ``strategy`` on a fresh deployment; returns the second round's timing.

    ``setup`` is ``(task poll interval, SuperNode idle wait)`` in seconds, or ``None`` for
    Flower's defaults (1 s and 3 s).
    """
    env = {} if setup is None else {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(setup[0]), "FLSPLIT_SUPERNODE_IDLE_S": str(setup[1])}
    label = "flower defaults (poll 1 s, idle 3 s)" if setup is None else f"poll {setup[0]:g} s, idle {setup[1]:g} s"
    name = f"{strategy}-{len(label)}-{abs(hash(label)) % 10000}"
    with SuperLink(work / name, simulation=False, env=env) as link:
        nodes = [SuperNode(link, f"node{i}", f"partition-id={i} num-partitions=2", fast=setup is not None, env=env) for i in range(2)]
        try:
            done = link.run(
                f"strategy='{strategy}' dataset='synthetic' model='resnet20' num-server-rounds=2 "
                f"max-batches={batches} batch-size=32 eval-samples=64 results-dir='{work}' run-name='{name}'",
                timeout_s=1800,
            )
        finally:
            for node in nodes:
                node.stop()
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    last = read_metrics(work / name / "metrics.jsonl")[-1]
    return {
        "setup": label,
        "strategy": strategy,
        "batches_per_client": batches,
        "train_messages": last["train_messages"],
        "round_s": last["round_s"],
        "round_trip_s_mean": last["round_trip_s"] / last["train_messages"],
        "transport_s_mean": last["comm_s"] / last["train_messages"],
        "eval_s": last["eval_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument(
        "--setups", default="default,0.1:0.25,0.01:0.02",
        help="comma-separated 'default' or 'POLL:IDLE' seconds pairs",
    )
    parser.add_argument("--strategies", default="dsl,csl")
    args = parser.parse_args()
    setups = [None if s == "default" else tuple(float(v) for v in s.split(":")) for s in args.setups.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setup in setups:
            for strategy in args.strategies.split(","):
                rows.append(measure(setup, strategy, args.batches, Path(tmp)))  # type: ignore[arg-type]
                print(rows[-1], flush=True)
    print(write_results("deployment_latency", rows))


if __name__ == "__main__":
    main()
