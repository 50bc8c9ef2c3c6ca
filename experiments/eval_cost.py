"""What evaluation costs per round against training, before and after the evaluation keys.

DSL (resnet20, cut ``s``, 2 IID clients, CIFAR-10, 40 batches of 128 per client per round: the
quick start's scale, where evaluation was measured dearer than training) scores the full
10,000-image test split. Without averaging, each client's own slice embeds the whole split, so
a round evaluates 20,000 images. Three runs, one after another on one SuperLink, same seed:

- ``before``: every round scored, test activations in fp32 (the defaults);
- ``bf16``: every round scored, test activations in bf16 (``eval-wire-dtype``);
- ``every-N``: fp32, scored every N-th round and after the last (``eval-every``).

Training is the same in all three (same seed and batches; the table checks the training loss),
so the accuracy change of ``bf16`` is what bf16 activations change in the scores of the same
network. Writes ``experiments/results/eval_cost.json`` and ``eval_cost.md``; run it on a quiet
machine, the times are the result.

    python -m experiments.eval_cost --data-dir ../shared/data
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

CLIENTS = 2


def variants(every: int) -> dict[str, dict[str, Any]]:
    """Variant name -> its evaluation keys."""
    return {
        "before": {"eval-wire-dtype": "fp32", "eval-every": 1},
        "bf16": {"eval-wire-dtype": "bf16", "eval-every": 1},
        f"every-{every}": {"eval-wire-dtype": "fp32", "eval-every": every},
    }


def run_config(name: str, keys: dict[str, Any], data_dir: str, rounds: int, results_dir: str) -> dict[str, Any]:
    """One run's config: the quick start's DSL scale, the full test split, ``keys`` on top."""
    return {
        "strategy": "dsl", "model": "resnet20", "cut": "s", "dataset": "cifar10", "data-dir": data_dir,
        "partition": "iid", "num-server-rounds": rounds, "max-batches": 40, "batch-size": 128,
        "eval-samples": 0, "memory-probe": 0, "results-dir": results_dir, "run-name": name, **keys,
    }


def summarise(name: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: training and evaluation seconds per round (round 1 left out of training's mean
    when there are more: it decodes the data), evaluation over the whole run, the last scores."""
    timed = rounds[1:] or rounds
    scored = [r for r in rounds if r["test_accuracy"] is not None]
    train_s = fmean(r["round_s"] for r in timed)
    eval_per_round = sum(r["eval_s"] for r in rounds) / len(rounds)
    return {
        "variant": name,
        "rounds": len(rounds),
        "rounds scored": len(scored),
        "training per round (s)": train_s,
        "evaluation per scored round (s)": fmean(r["eval_s"] for r in scored),
        "evaluation per round, whole run (s)": eval_per_round,
        "evaluation / training": eval_per_round / train_s,
        "test bytes up per scored round (MB)": fmean(r["bytes_eval_up"] for r in scored) / 1e6,
        "final test acc. (%)": 100 * scored[-1]["test_accuracy"],
        "final train loss": rounds[-1]["train_loss"],
    }


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each row's evaluation time and accuracy against ``before`` (the first row)."""
    base = rows[0]
    for row in rows:
        row["evaluation vs before"] = row["evaluation per round, whole run (s)"] / base["evaluation per round, whole run (s)"]
        row["accuracy change (points)"] = row["final test acc. (%)"] - base["final test acc. (%)"]
        row["same training"] = row["final train loss"] == base["final train loss"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every", type=int, default=2, help="eval-every of the third run")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "home") as link:
        runs = variants(args.every)
        for i, (name, keys) in enumerate(runs.items(), start=1):
            config = run_config(name, keys, data_dir, args.rounds, tmp)
            done = link.run(run_config_text(config), timeout_s=3600, num_supernodes=CLIENTS)
            if done.returncode != 0:
                raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
            rows.append(summarise(name, read_metrics(Path(tmp) / name / "metrics.jsonl")))
            print(f"[{i}/{len(runs)}] {rows[-1]}", flush=True)
    facts = {"strategy": "dsl", "clients": CLIENTS, "batches per client per round": 40, "test images": 10_000}
    print(write_results("eval_cost", compare(rows), facts))


if __name__ == "__main__":
    main()
