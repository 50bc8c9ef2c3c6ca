"""bf16 autocast on the CPU against float32: time per epoch and accuracy, same seed, same batches.

DSL and CSL (resnet20, cut ``s``, 2 clients, IID, CIFAR-10), each with ``amp`` ``off`` and
``bf16``, through ``flwr run`` in simulation on one SuperLink and ``device = "cpu"``. Every
round is one whole epoch of each client's partition (``max-batches = 0``), so ``round_s`` is the
time of an epoch (both clients in parallel, the server beside them). Writes
``experiments/results/amp_cpu.json`` and ``amp_cpu.md``. Run it on a quiet machine: the times
are the result.

    python -m experiments.amp_cpu --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from statistics import fmean
from typing import Any

from experiments.tables import write_results
from flsplit.launcher import SuperLink, run_config_text
from flsplit.results import read_metrics

STRATEGIES = ("dsl", "csl")
AMPS = ("off", "bf16")


def run_config(strategy: str, amp: str, data_dir: str, rounds: int, eval_samples: int, results_dir: str) -> dict[str, Any]:
    """The run config of one run: a whole epoch per round on the CPU, autocast ``amp``."""
    return {
        "strategy": strategy, "amp": amp, "device": "cpu", "model": "resnet20", "dataset": "cifar10",
        "data-dir": data_dir, "num-server-rounds": rounds, "local-epochs": 1, "max-batches": 0,
        "eval-samples": eval_samples, "memory-probe": 0, "results-dir": results_dir, "run-name": f"{strategy}-{amp}",
    }


def summarise(strategy: str, amp: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from a run's ``metrics.jsonl`` rounds (the first epoch's time is left out
    of the mean when there are later ones: it includes the workers' start-up)."""
    timed = rounds[1:] or rounds
    return {
        "strategy": strategy,
        "amp": amp,
        "epochs": len(rounds),
        "epoch_s": fmean(r["round_s"] for r in timed),
        "client_fwd_s": fmean(r["client_fwd_s"] for r in timed),
        "client_bwd_s": fmean(r["client_bwd_s"] for r in timed),
        "server_s": fmean(r["server_s"] for r in timed),
        "test_accuracy": rounds[-1]["test_accuracy"],
    }


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add, to each row, its epoch time over the same strategy's ``off`` run and the accuracy change."""
    base = {r["strategy"]: r for r in rows if r["amp"] == "off"}
    for row in rows:
        ref = base[row["strategy"]]
        row["epoch_s_vs_off"] = row["epoch_s"] / ref["epoch_s"]
        row["accuracy_change_points"] = 100 * (row["test_accuracy"] - ref["test_accuracy"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=2, help="epochs per run")
    parser.add_argument("--eval-samples", type=int, default=0, help="0: the whole test split")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    rows = []
    runs = [(s, a) for s in STRATEGIES for a in AMPS]
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "home") as link:
        for i, (strategy, amp) in enumerate(runs, start=1):
            config = run_config(strategy, amp, data_dir, args.rounds, args.eval_samples, tmp)
            done = link.run(run_config_text(config), timeout_s=6 * 3600)
            if done.returncode != 0:
                raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
            rows.append(summarise(strategy, amp, read_metrics(Path(tmp) / f"{strategy}-{amp}" / "metrics.jsonl")))
            print(f"[{i}/{len(runs)}] {rows[-1]}", flush=True)
    print(write_results("amp_cpu", compare(rows), {"rounds": args.rounds, "device": "cpu", "clients": 2}))


if __name__ == "__main__":
    main()
