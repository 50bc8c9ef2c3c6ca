"""One run of the project on SuperNodes of one host (two unless told): simulated, or real ones on 127.0.0.1.

The deployment drivers (``deployment_latency``, ``deployment_epoch``) compare the two engines
on the same run config; this is the one place that starts them, so both compare alike.
"""

from __future__ import annotations

from pathlib import Path

from flsplit.launcher import SuperLink, SuperNode
from flsplit.results import read_metrics

NUM_NODES = 2


def _metrics_or_exit(done_rc: int, output: str, metrics: Path) -> list[dict]:
    if done_rc != 0:
        raise SystemExit(f"run failed; its files are in {metrics.parent}\n{output[-6000:]}")
    return read_metrics(metrics)


def in_simulation(home: Path, run_config: str, metrics: Path, timeout_s: float, num_nodes: int = NUM_NODES) -> list[dict]:
    """``flwr run`` in the simulation engine, ``num_nodes`` virtual SuperNodes of 1 CPU each; every round's metrics."""
    with SuperLink(home, simulation=True) as link:
        done = link.run(run_config, num_supernodes=num_nodes, timeout_s=timeout_s)
    return _metrics_or_exit(done.returncode, done.stdout + done.stderr, metrics)


def on_supernodes(
    home: Path,
    run_config: str,
    metrics: Path,
    timeout_s: float,
    node_config: str = "",
    node_env: dict[str, str] | None = None,
    node_env_of: dict[int, dict[str, str]] | None = None,
    link_env: dict[str, str] | None = None,
    database: Path | None = None,
    num_nodes: int = NUM_NODES,
    **node_options: bool | int,
) -> list[dict]:
    """``flwr run`` on a fresh SuperLink with ``num_nodes`` real SuperNodes (partition i of them); every round's metrics.

    ``node_env`` goes to both SuperNodes, ``node_env_of[i]`` to node i only (e.g. its trace folder);
    ``node_options`` are ``SuperNode``'s (``warm``, ``fast``, ``nice``).
    """
    with SuperLink(home, simulation=False, env=link_env, database=database) as link:
        nodes = []
        try:
            for i in range(num_nodes):
                env = (node_env or {}) | (node_env_of or {}).get(i, {})
                config = f"partition-id={i} num-partitions={num_nodes} {node_config}".strip()
                nodes.append(SuperNode(link, f"node{i}", config, env=env, **node_options))
            done = link.run(run_config, timeout_s=timeout_s)
        finally:
            for node in nodes:
                node.stop()
    return _metrics_or_exit(done.returncode, done.stdout + done.stderr, metrics)
