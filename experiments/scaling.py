"""How epoch time and memory grow with the number of clients and with depth.

Through ``flwr run`` in simulation on real CIFAR-10 (IID), the same number of batches per round
in total, split across N clients: N in 1, 2, 5, 10, 20 at resnet20, and depth resnet56/110 at
N = 2. Round 2 is timed (round 1 warms the workers up); the parties' peak training memory is
probed in round 1 (``flsplit.memory``), the processes' RSS high-water marks at the end. Writes ``experiments/results/scaling.json``
and ``scaling.md``.

    python -m experiments.scaling --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from experiments.tables import write_results
from flsplit.launcher import SuperLink
from flsplit.results import read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=40, help="batches per round, over all clients")
    parser.add_argument("--strategies", default="dsl,csl")
    args = parser.parse_args()
    grid = [(s, "resnet20", n) for s in args.strategies.split(",") for n in (1, 2, 5, 10, 20)]
    grid += [(s, depth, 2) for s in args.strategies.split(",") for depth in ("resnet56", "resnet110")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "home") as link:
        for i, (strategy, model, clients) in enumerate(grid, start=1):
            name = f"{strategy}-{model}-n{clients}"
            done = link.run(
                f"strategy='{strategy}' model='{model}' dataset='cifar10' data-dir='{Path(args.data_dir).resolve()}' "
                f"num-server-rounds=2 max-batches={max(1, args.batches // clients)} eval-samples=256 "
                f"results-dir='{tmp}' run-name='{name}'",
                num_supernodes=clients,
                timeout_s=3600,
            )
            if done.returncode != 0:
                raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
            metrics = read_metrics(Path(tmp) / name / "metrics.jsonl")
            first, last = metrics[0], metrics[-1]  # the memory probe runs in round 1
            rows.append(
                {
                    "strategy": strategy,
                    "model": model,
                    "clients": clients,
                    "batches": max(1, args.batches // clients) * clients,
                    "round_s": last["round_s"],
                    "s_per_batch": last["round_s"] / (max(1, args.batches // clients) * clients),
                    "train_messages": last["train_messages"],
                    "server_party_peak_mb": first["server_peak_mb"],
                    "client_party_peak_mb": first["client_peak_mb"],
                    "server_peak_rss_mb": last["server_peak_rss_mb"],
                    "client_peak_rss_mb": last["client_peak_rss_mb"],
                }
            )
            print(f"[{i}/{len(grid)}] {rows[-1]}", flush=True)
    print(write_results("scaling", rows))


if __name__ == "__main__":
    main()
