"""Accuracy and bytes of compressed activations (and CSL gradients) on real CIFAR-10.

DSL with ``wire-dtype`` fp32, fp16, bf16 and int8, and CSL with fp32 and int8, all through
``flwr run`` in simulation on the same SuperLink, same seed and same batches (resnet20, cut
``s``, 2 clients, IID). Writes ``experiments/results/compression.json`` and ``compression.md``.

    python -m experiments.compression --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from experiments.tables import write_results
from flsplit.launcher import SuperLink
from flsplit.results import read_metrics

RUNS = [("dsl", "fp32"), ("dsl", "fp16"), ("dsl", "bf16"), ("dsl", "int8"), ("csl", "fp32"), ("csl", "int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=100, help="batches per client per round")
    parser.add_argument("--eval-samples", type=int, default=5000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "home") as link:
        for i, (strategy, wire) in enumerate(RUNS, start=1):
            name = f"{strategy}-{wire}"
            done = link.run(
                f"strategy='{strategy}' wire-dtype='{wire}' model='resnet20' dataset='cifar10' "
                f"data-dir='{Path(args.data_dir).resolve()}' num-server-rounds={args.rounds} max-batches={args.batches} "
                f"eval-samples={args.eval_samples} results-dir='{tmp}' run-name='{name}'",
                timeout_s=3600,
            )
            if done.returncode != 0:
                raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
            rounds = read_metrics(Path(tmp) / name / "metrics.jsonl")
            rows.append(
                {
                    "strategy": strategy,
                    "wire_dtype": wire,
                    "test_accuracy": rounds[-1]["test_accuracy"],
                    "aux_accuracy": rounds[-1]["aux_accuracy"],
                    "train_bytes": sum(r["bytes_up"] + r["bytes_down"] for r in rounds),
                }
            )
            print(f"[{i}/{len(RUNS)}] {rows[-1]}", flush=True)
    base = next(r for r in rows if r["strategy"] == "csl" and r["wire_dtype"] == "fp32")
    dsl32 = next(r for r in rows if r["strategy"] == "dsl" and r["wire_dtype"] == "fp32")
    for row in rows:
        row["bytes_vs_csl_fp32"] = row["train_bytes"] / base["train_bytes"]
        same = dsl32 if row["strategy"] == "dsl" else base
        row["accuracy_change_points"] = 100 * (row["test_accuracy"] - same["test_accuracy"])
    print(write_results("compression", rows, {"rounds": args.rounds, "batches_per_client": args.batches}))


if __name__ == "__main__":
    main()
