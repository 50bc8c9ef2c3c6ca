"""One full CIFAR-10 epoch of DSL and of CSL on two real SuperNodes, against the simulation engine.

The table an edge user picks a strategy from: for each strategy, one round of one local epoch
over all 50,000 training images (2 clients, IID halves, resnet20 cut ``s``, batch 128, SGD
0.05), then the whole 10,000-image test split, run (1) in the simulation engine with 2 virtual
SuperNodes of 1 CPU each and (2) on a SuperLink with two real SuperNodes on 127.0.0.1 whose
ClientApp tasks fork from the warm SuperExec (``apps.warm_superexec``). By default each real
SuperNode gets one torch thread (``warm-1thread``), as each virtual one gets 1 CPU: with torch's
default (2 threads each, ``warm``) two SuperNodes and the ServerApp oversubscribe the 2 cores.
``warm-1thread-nice15`` also runs the SuperNodes at nice 15 under the ServerApp, as Ray runs
the simulation's clients.
``--transports`` runs every engine on each transport (``stream``: per-batch frames on the
data plane, TLS on for real SuperNodes, loopback plain TCP in simulation), so each ratio
compares one transport's deployment with its own simulation. Peak resident memory of the
client and server processes is reported per row (the whole process: Ray's worker in
simulation, the forked ClientApp task on a SuperNode).
Same seed, same config, one after the other, nothing else running. Writes
``experiments/results/deployment_epoch.{json,md}`` (``--name`` renames)::

    python -m experiments.deployment_epoch --data-dir <folder holding cifar10-jpeg.tar.gz>   # ~30 min, 2 idle cores
    python -m experiments.deployment_epoch --data-dir <dir> --engines simulation,warm,warm-1thread
    python -m experiments.deployment_epoch --data-dir <dir> --transports stream --name deployment_epoch_stream
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from experiments import federations
from experiments.tables import RESULTS, markdown_table
from flsplit.launcher import run_config_text

STRATEGIES = ("dsl", "csl")
#: engine -> (its label in the table, the environment of each real SuperNode (None: simulation), its nice)
ENGINES: dict[str, tuple[str, dict[str, str] | None, int]] = {
    "simulation": ("simulation", None, 0),
    "warm": ("deployment (warm)", {}, 0),
    "warm-1thread": ("deployment (warm, 1 thread per node)", {"OMP_NUM_THREADS": "1"}, 0),
    "warm-1thread-nice15": ("deployment (warm, 1 thread per node, nice 15)", {"OMP_NUM_THREADS": "1"}, 15),
}


def _config(strategy: str, work: Path, name: str, data_dir: Path, scale: dict[str, int], transport: str) -> str:
    return run_config_text({
        "strategy": strategy, "dataset": "cifar10", "data-dir": str(data_dir), "model": "resnet20", "cut": "s",
        "num-server-rounds": 1, "batch-size": 128, "min-clients": 2, "results-dir": str(work), "run-name": name,
        "transport": transport, **scale,
    })


def epoch(engine: str, strategy: str, work: Path, data_dir: Path, scale: dict[str, int], transport: str) -> dict:
    """One round (the epoch, then the test) on ``engine``: its metrics."""
    name = f"{engine}-{strategy}-{transport}"
    config, metrics = _config(strategy, work, name, data_dir, scale, transport), work / name / "metrics.jsonl"
    _, node_env, nice = ENGINES[engine]
    if node_env is None:
        return federations.in_simulation(work / name, config, metrics, timeout_s=7200)[-1]
    node_config = f"data-dir='{data_dir}'"
    return federations.on_supernodes(work / name, config, metrics, 7200, node_config=node_config, node_env=node_env, warm=True, nice=nice)[-1]


def _row(engine: str, strategy: str, transport: str, metrics: dict) -> dict:
    uploads = metrics["train_messages"]
    return {
        "strategy": strategy, "transport": transport, "engine": engine,
        "train_s": round(metrics["round_s"], 1), "eval_s": round(metrics["eval_s"], 1),
        "uploads": uploads, "round_trip_s_mean": round(metrics["round_trip_s"] / max(uploads, 1), 3),
        "test_accuracy": round(metrics["test_accuracy"], 4),
        **{key: round(metrics[key], 1) for key in ("server_s", "client_fwd_s", "client_bwd_s", "comm_s")},
        "client_peak_rss_mb": round(metrics["client_peak_rss_mb"]), "server_peak_rss_mb": round(metrics["server_peak_rss_mb"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the folder holding cifar10-jpeg.tar.gz")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, run in this order")
    parser.add_argument("--engines", default="simulation,warm-1thread", help=f"comma-separated, simulation first, of {list(ENGINES)}")
    parser.add_argument("--transports", default="messages", help="comma-separated, of messages,stream: every engine runs on each")
    parser.add_argument("--max-batches", type=int, default=0, help="batches per client (0: the whole epoch); for a smoke run")
    parser.add_argument("--eval-samples", type=int, default=0, help="test images (0: all 10,000); for a smoke run")
    parser.add_argument("--note", default="", help="free text kept in the conditions, e.g. 'quiet machine'")
    parser.add_argument("--name", default="deployment_epoch", help="results file stem under experiments/results")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",")]
    if engines[0] != "simulation" or not set(engines) <= set(ENGINES) or len(set(engines)) < len(engines):
        parser.error(f"--engines: start with simulation (the base of every ratio), each once, from {list(ENGINES)}; got {args.engines}")
    scale = {"max-batches": args.max_batches, "eval-samples": args.eval_samples}  # 0, 0: the whole epoch and test split
    rows = []
    work = Path(tempfile.mkdtemp(prefix="deployment-epoch-"))  # kept: the runs' logs and metrics
    print(f"runs in {work}", flush=True)
    transports = [t.strip() for t in args.transports.split(",")]
    if not set(transports) <= {"messages", "stream"}:
        parser.error(f"--transports: choose from messages, stream; got {args.transports}")
    for strategy in args.strategies.split(","):
        for transport in transports:
            for engine in engines:
                rows.append(_row(ENGINES[engine][0], strategy, transport, epoch(engine, strategy, work, args.data_dir.resolve(), scale, transport)))
                print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        base = next(r for r in rows if r["strategy"] == row["strategy"] and r["transport"] == row["transport"] and r["engine"] == "simulation")
        row["train_vs_simulation"] = round(row["train_s"] / base["train_s"], 2)
        row["eval_vs_simulation"] = round(row["eval_s"] / base["eval_s"], 2)
    conditions = {
        "note": args.note, "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "run": "CIFAR-10, 2 clients (IID halves of 50,000), resnet20 cut s, batch 128, SGD 0.05, one round",
        "max_batches": args.max_batches, "eval_samples": args.eval_samples,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2))
    text = f"Conditions: {json.dumps(conditions)}\n\n{markdown_table(rows)}\n"
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
