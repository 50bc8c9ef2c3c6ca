"""Check that CSL and DSL run with 1, 2 and 5 clients, with and without aggregation, IID and
Dirichlet, through ``flwr run`` in simulation (synthetic data, tiny rounds).

    python -m experiments.client_matrix
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from experiments.tables import write_results
from flsplit.launcher import SuperLink
from flsplit.results import read_metrics


def main() -> None:
    rows = []
    grid = list(itertools.product(("csl", "dsl"), (1, 2, 5), (False, True), ("iid", "dirichlet")))
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "home") as link:
        for i, (strategy, clients, aggregate, partition) in enumerate(grid, start=1):
            name = f"{strategy}-n{clients}-{'agg' if aggregate else 'own'}-{partition}"
            done = link.run(
                f"strategy='{strategy}' dataset='synthetic' model='resnet20' num-server-rounds=2 max-batches=3 "
                f"batch-size=16 eval-samples=64 partition='{partition}' aggregate-clients={str(aggregate).lower()} "
                f"results-dir='{tmp}' run-name='{name}'",
                num_supernodes=clients,
            )
            ok = done.returncode == 0 and (Path(tmp) / name / "metrics.jsonl").exists()
            last = read_metrics(Path(tmp) / name / "metrics.jsonl")[-1] if ok else {}
            rows.append(
                {
                    "run": name,
                    "ok": ok and last.get("num_clients") == clients and not last.get("failed_clients"),
                    "bytes_down": last.get("bytes_down"),
                    "bytes_down_gradients": last.get("bytes_down_gradients"),
                    "bytes_up_activations": last.get("bytes_up_activations"),
                    "bytes_model_sync": last.get("bytes_model_sync"),
                }
            )
            print(f"[{i}/{len(grid)}] {rows[-1]}", flush=True)
    print(write_results("client_matrix", rows))
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} configurations ran cleanly")


if __name__ == "__main__":
    main()
