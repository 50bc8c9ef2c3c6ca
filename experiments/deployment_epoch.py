"""One full CIFAR-10 epoch of DSL and of CSL on two real SuperNodes, against the simulation engine.

The table an edge user picks a strategy from: for each strategy, one round of one local epoch
over all 50,000 training images (2 clients, IID halves, resnet20 cut ``s``, batch 128, SGD
0.05), then the whole 10,000-image test split, run (1) in the simulation engine with 2 virtual
SuperNodes of 1 CPU each and (2) on a SuperLink with two real SuperNodes on 127.0.0.1 whose
ClientApp tasks fork from the warm SuperExec (``apps.warm_superexec``). Same seed, same
config, one after the other, nothing else running. Writes
``experiments/results/deployment_epoch.{json,md}``::

    python -m experiments.deployment_epoch --data-dir <folder holding cifar10-jpeg.tar.gz>   # ~30 min, 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from experiments.tables import RESULTS, markdown_table
from flsplit.launcher import SuperLink, SuperNode, run_config_text
from flsplit.results import read_metrics

STRATEGIES = ("dsl", "csl")
ENGINES = ("simulation", "deployment (warm)")


def _config(strategy: str, work: Path, name: str, data_dir: Path, scale: dict[str, int]) -> str:
    return run_config_text({
        "strategy": strategy, "dataset": "cifar10", "data-dir": str(data_dir), "model": "resnet20", "cut": "s",
        "num-server-rounds": 1, "batch-size": 128, "min-clients": 2, "results-dir": str(work), "run-name": name, **scale,
    })


def _checked(done: subprocess.CompletedProcess[str], work: Path) -> None:
    if done.returncode != 0:
        raise SystemExit(f"run failed; its files are in {work}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def simulation_epoch(strategy: str, work: Path, data_dir: Path, scale: dict[str, int]) -> dict:
    name = f"simulation-{strategy}"
    with SuperLink(work / name, simulation=True) as link:
        done = link.run(_config(strategy, work, name, data_dir, scale), num_supernodes=2, timeout_s=7200)
    _checked(done, work)
    return read_metrics(work / name / "metrics.jsonl")[-1]


def deployment_epoch(strategy: str, work: Path, data_dir: Path, scale: dict[str, int]) -> dict:
    name = f"deployment-{strategy}"
    with SuperLink(work / name, simulation=False) as link:
        nodes = []
        try:
            for i in range(2):
                nodes.append(SuperNode(link, f"node{i}", f"partition-id={i} num-partitions=2 data-dir='{data_dir}'", warm=True))
            done = link.run(_config(strategy, work, name, data_dir, scale), timeout_s=7200)
        finally:
            for node in nodes:
                node.stop()
    _checked(done, work)
    return read_metrics(work / name / "metrics.jsonl")[-1]


def _row(engine: str, strategy: str, metrics: dict) -> dict:
    messages = metrics["train_messages"]
    return {
        "strategy": strategy, "engine": engine, "train_s": round(metrics["round_s"], 1), "eval_s": round(metrics["eval_s"], 1),
        "train_messages": messages, "round_trip_s_mean": round(metrics["round_trip_s"] / max(messages, 1), 3),
        "test_accuracy": round(metrics["test_accuracy"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the folder holding cifar10-jpeg.tar.gz")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, run in this order")
    parser.add_argument("--max-batches", type=int, default=0, help="batches per client (0: the whole epoch); for a smoke run")
    parser.add_argument("--eval-samples", type=int, default=0, help="test images (0: all 10,000); for a smoke run")
    parser.add_argument("--note", default="", help="free text kept in the conditions, e.g. 'quiet machine'")
    args = parser.parse_args()
    scale = {"max-batches": args.max_batches, "eval-samples": args.eval_samples}  # 0, 0: the whole epoch and test split
    rows = []
    work = Path(tempfile.mkdtemp(prefix="deployment-epoch-"))  # kept: the runs' logs and metrics
    print(f"runs in {work}", flush=True)
    for strategy in args.strategies.split(","):
        for engine, epoch in zip(ENGINES, (simulation_epoch, deployment_epoch)):
            rows.append(_row(engine, strategy, epoch(strategy, work, args.data_dir.resolve(), scale)))
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        base = next(r for r in rows if r["strategy"] == row["strategy"] and r["engine"] == ENGINES[0])
        row["train_vs_simulation"] = round(row["train_s"] / base["train_s"], 2)
    conditions = {
        "note": args.note, "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "run": "CIFAR-10, 2 clients (IID halves of 50,000), resnet20 cut s, batch 128, SGD 0.05, one round",
        "max_batches": args.max_batches, "eval_samples": args.eval_samples,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deployment_epoch.json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2))
    text = f"Conditions: {json.dumps(conditions)}\n\n{markdown_table(rows)}\n"
    (RESULTS / "deployment_epoch.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
