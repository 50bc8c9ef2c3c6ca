"""Epoch time of CSL and DSL, and CSL's per-batch round trip, through ``flwr run`` in simulation.

One full epoch of resnet20 on real CIFAR-10 with 2 clients (IID), for each strategy, on a
SuperLink started here. Writes ``experiments/results/core_timing.json`` and prints a table.

    python -m experiments.core_timing --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from experiments.tables import write_results
from flsplit.launcher import SuperLink
from flsplit.results import read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--strategies", default="dsl,csl")
    parser.add_argument("--eval-samples", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "flwr-home") as link:
        for strategy in args.strategies.split(","):
            config = (
                f"strategy='{strategy}' model='resnet20' dataset='cifar10' data-dir='{Path(args.data_dir).resolve()}' "
                f"num-server-rounds=2 max-batches=0 eval-samples={args.eval_samples} "
                f"results-dir='{tmp}/results' run-name='{strategy}'"
            )
            started = time.perf_counter()
            done = link.run(config, num_supernodes=2, timeout_s=3600)
            if done.returncode != 0:
                raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
            metrics = read_metrics(Path(tmp) / "results" / strategy / "metrics.jsonl")
            last = metrics[-1]  # round 2: data already decoded and cached in the workers
            rows.append(
                {
                    "strategy": strategy,
                    "epoch_s": last["round_s"],
                    "train_messages": last["train_messages"],
                    "round_trip_s_mean": last["round_trip_s"] / last["train_messages"],
                    "transit_s_mean": last["comm_s"] / last["train_messages"],
                    "client_fwd_s": last["client_fwd_s"],
                    "client_bwd_s": last["client_bwd_s"],
                    "server_s": last["server_s"],
                    "test_accuracy": last["test_accuracy"],
                    "bytes_up": last["bytes_up"],
                    "bytes_down": last["bytes_down"],
                    "wall_s_whole_run": time.perf_counter() - started,
                }
            )
    print(write_results("core_timing", rows))


if __name__ == "__main__":
    main()
