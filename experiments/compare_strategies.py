"""Accuracy against cumulative communication for the split-learning family and a FedAvg baseline.

fedavg, splitfed-v1, splitfed-v2, cse-fsl, fsl-sage, csl and dsl on CIFAR-10 (ResNet-20 cut
``s``, auxiliary head ``pooled``, SGD lr 0.05), 3 clients, Dirichlet alpha = 1, each through
``flwr run`` in simulation on one SuperLink started here, one after another. Communication is
the ledger's training traffic (``bytes_up + bytes_down``: activations, labels, gradients, model
sync, aligned auxiliary models; control records and evaluation excluded), in GB = 1e9 bytes.

For each method the table gives the communication up to the first round whose test accuracy
reaches the target. Unless ``--target`` is given, the target is the highest accuracy that every
method reaches (the smallest of the methods' best accuracies, rounded down to a whole percent),
so that every method gets a number.

Writes ``compare_strategies.{json,csv,md,png}`` to ``--output`` (default
``experiments/results/``). The JSON is updated after each method, and methods already in it
(with the same settings) are skipped, so an interrupted run continues where it stopped.

    python -m experiments.compare_strategies --data-dir ../shared/data   # about 35 min on 2 cores
    python -m experiments.compare_strategies --plot-only                 # redraw from the JSON
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from experiments.flower_runner import SuperLink, run_config_text
from experiments.tables import RESULTS, markdown_table
from flsplit.results import read_metrics

NAME = "compare_strategies"
GB = 1e9

#: Method -> run-config keys beyond the shared ones. fsl-sage aligns every 2 rounds with 30
#: Adam epochs (the paper: every 10 of 200 rounds, 100 epochs); both upload every 5th batch.
METHODS: dict[str, dict[str, object]] = {
    "fedavg": {},
    "splitfed-v1": {},
    "splitfed-v2": {},
    "cse-fsl": {"upload-every": 5},
    "fsl-sage": {"upload-every": 5, "align-every": 2, "align-epochs": 30, "align-buffer": 1000},
    "csl": {},
    "dsl": {},
}
LABELS = {
    "fedavg": "FedAvg",
    "splitfed-v1": "SplitFed-V1 (MS)",
    "splitfed-v2": "SplitFed-V2 (SS)",
    "cse-fsl": "CSE-FSL",
    "fsl-sage": "FSL-SAGE",
    "csl": "CSL",
    "dsl": "DSL",
}
#: GB to reach about 81 % on CIFAR-10 with ResNet-18, read off FSL-SAGE's reference plots.
PAPER_GB = {"fsl-sage": 12.2, "cse-fsl": 26.0, "splitfed-v1": 60.2, "fedavg": 70.0, "splitfed-v2": 109.1}
KEPT = (
    "round", "test_accuracy", "test_loss", "aux_accuracy", "train_loss", "bytes_up", "bytes_down",
    "bytes_up_activations", "bytes_up_labels", "bytes_down_gradients", "bytes_model_sync",
    "bytes_down_aux_model", "round_s", "eval_s", "train_messages", "align_before_cosine", "align_after_cosine",
)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run config shared by every method (everything that makes results comparable)."""
    return {
        "model": "resnet20", "cut": "s", "aux-head": "pooled", "dataset": "cifar10", "partition": "dirichlet",
        "dirichlet-alpha": 1.0, "num-server-rounds": args.rounds, "max-batches": args.max_batches, "local-epochs": 1,
        "batch-size": 128, "lr": 0.05, "momentum": 0.9, "weight-decay": 5e-4, "eval-samples": args.eval_samples,
        "seed": args.seed, "clients": 3,
    }


def run_method(link: SuperLink, method: str, settings: dict[str, Any], data_dir: Path, workdir: Path) -> list[dict[str, Any]]:
    """Run one method through ``flwr run``, printing a line per round as it lands."""
    keys = {k: v for k, v in settings.items() if k != "clients"} | METHODS[method]
    keys |= {"strategy": method, "data-dir": str(data_dir), "results-dir": str(workdir), "run-name": method}
    process = link.launch(run_config_text(keys), num_supernodes=settings["clients"])
    tails = [_drain(stream) for stream in (process.stdout, process.stderr)]  # a full pipe would block flwr run
    metrics_path, seen, started, cumulative = workdir / method / "metrics.jsonl", 0, time.monotonic(), 0.0
    while True:
        finished = process.poll() is not None
        rounds = read_metrics(metrics_path) if metrics_path.exists() else []
        for r in rounds[seen:]:
            cumulative += (r["bytes_up"] + r["bytes_down"]) / GB
            print(
                f"  [{method}] round {r['round']}/{settings['num-server-rounds']}: test acc {100 * r['test_accuracy']:.1f} %, "
                f"{cumulative:.3f} GB so far, round {r['round_s'] + r['eval_s']:.0f} s, {time.monotonic() - started:.0f} s elapsed",
                flush=True,
            )
        seen = len(rounds)
        if finished:
            break
        time.sleep(2.0)
    process.wait()
    if process.returncode != 0 or seen < settings["num-server-rounds"]:
        output = "\n".join("".join(tail) for tail in tails)
        raise SystemExit(f"{method} failed:\n{output[-6000:]}")
    return rounds


def _drain(stream: IO[str] | None) -> deque[str]:
    """Read ``stream`` to its end in a thread; keep its last 200 lines."""
    tail: deque[str] = deque(maxlen=200)
    if stream is not None:
        threading.Thread(target=lambda: tail.extend(stream), daemon=True).start()
    return tail


def compact(rounds: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """What the results keep of a run: a few fields per round, cumulative GB, wall clock."""
    kept, cumulative = [], 0
    for r in rounds:
        cumulative += r["bytes_up"] + r["bytes_down"]
        kept.append({k: r.get(k) for k in KEPT} | {"cumulative_gb": cumulative / GB})
    return {"rounds": kept, "wall_s": wall_s}


def choose_target(results: dict[str, Any]) -> float:
    """The highest whole percent of accuracy that every method reaches."""
    best = min(max(r["test_accuracy"] for r in run["rounds"]) for run in results.values())
    return math.floor(100 * best) / 100


def summary(results: dict[str, Any], target: float) -> list[dict[str, Any]]:
    """One row per method: accuracy, traffic, and traffic to the first round at the target."""
    rows = []
    for method, run in results.items():
        rounds = run["rounds"]
        hit = next((r for r in rounds if r["test_accuracy"] >= target), None)
        rows.append(
            {
                "method": LABELS.get(method, method),
                "final test acc. (%)": round(100 * rounds[-1]["test_accuracy"], 1),
                "best test acc. (%)": round(100 * max(r["test_accuracy"] for r in rounds), 1),
                "total comm. (GB)": round(rounds[-1]["cumulative_gb"], 3),
                f"comm. to {100 * target:.0f} % (GB)": round(hit["cumulative_gb"], 3) if hit else "not reached",
                "round reaching it": hit["round"] if hit else "-",
                "wall clock (min)": round(run["wall_s"] / 60, 1),
                "paper, ResNet-18, ~81 % (GB)": PAPER_GB.get(method, "-"),
            }
        )
    return rows


def plot(results: dict[str, Any], settings: dict[str, Any], target: float, path: Path) -> None:
    """Test accuracy against cumulative communication, one line per method, log-scaled x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method, run in results.items():
        xs = [r["cumulative_gb"] for r in run["rounds"]]
        ys = [100 * r["test_accuracy"] for r in run["rounds"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=LABELS.get(method, method))
    ax.axhline(100 * target, color="grey", linestyle="--", linewidth=1, label=f"target {100 * target:.0f} %")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative training communication (GB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"CIFAR-10, ResNet-20 (cut s), {settings['clients']} clients, Dirichlet α = {settings['dirichlet-alpha']:g}: "
        f"accuracy vs communication\n({settings['num-server-rounds']} rounds of {settings['max-batches']} batches of "
        f"{settings['batch-size']} per client)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: dict[str, Any], settings: dict[str, Any], output: Path, target: float | None) -> str:
    """JSON (everything), CSV (method, round, accuracy, GB), markdown table and plot."""
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{NAME}.json").write_text(json.dumps({"settings": settings, "methods": results}, indent=1))
    if not results:
        return ""
    target = target if target is not None else choose_target(results)
    with open(output / f"{NAME}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "round", "test_accuracy", "cumulative_gb"])
        for method, run in results.items():
            writer.writerows([method, r["round"], r["test_accuracy"], r["cumulative_gb"]] for r in run["rounds"])
    table = markdown_table(summary(results, target))
    header = (
        f"Target accuracy {100 * target:.0f} % (the highest whole percent every method reaches). "
        f"Settings: {json.dumps(settings)}\n\n"
    )
    (output / f"{NAME}.md").write_text(header + table)
    plot(results, settings, target, output / f"{NAME}.png")
    return header + table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="where cifar10-jpeg.tar.gz (or another CIFAR-10 layout) is")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--max-batches", type=int, default=32, help="batches of 128 per client per round")
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset, in plot order")
    parser.add_argument("--target", type=float, help="target accuracy in [0, 1] (default: chosen from the results)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the result files")
    parser.add_argument("--rerun", action="store_true", help="run methods again even if the JSON has them")
    parser.add_argument("--plot-only", action="store_true", help="redraw table and plot from the JSON")
    args = parser.parse_args()

    settings = settings_of(args)
    saved_path = args.output / f"{NAME}.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else None
    if args.plot_only:
        if saved is None:
            raise SystemExit(f"--plot-only: no results at {saved_path}")
        print(write_outputs(saved["methods"], saved["settings"], args.output, args.target))
        return
    if args.data_dir is None:
        raise SystemExit("--data-dir is required (the folder holding cifar10-jpeg.tar.gz)")
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    results: dict[str, Any] = {}
    if saved and saved["settings"] == settings:
        results = saved["methods"]
    elif saved:
        print(f"{saved_path} holds runs with other settings; they will be replaced", flush=True)
    todo = [m for m in methods if args.rerun or m not in results]
    print(f"{NAME}: {len(todo)} of {len(methods)} methods to run ({', '.join(todo) or 'none'}); settings {settings}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "flwr-home") as link:
        for i, method in enumerate(todo, start=1):
            print(f"[{i}/{len(todo)}] {method}", flush=True)
            started = time.monotonic()
            rounds = run_method(link, method, settings, Path(args.data_dir).resolve(), Path(tmp) / "runs")
            results[method] = compact(rounds, time.monotonic() - started)
            results = {m: results[m] for m in METHODS if m in results}  # the plot order
            write_outputs(results, settings, args.output, args.target)
            print(f"[{i}/{len(todo)}] {method} done in {results[method]['wall_s'] / 60:.1f} min", flush=True)
    print(write_outputs(results, settings, args.output, args.target))


if __name__ == "__main__":
    main()
