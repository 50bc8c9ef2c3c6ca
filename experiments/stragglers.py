"""One client slowed 4x: time to 60 % test accuracy for synchronous against asynchronous DSL, and what it costs.

4 clients on CIFAR-10 (``--data-dir``; the copy here, ``cifar10-jpeg.tar.gz``, is CIFAR-10
recompressed as JPEG quality 75, so absolute accuracies sit below the PNG originals'), IID
partitions (``--dirichlet-alpha`` for Dirichlet ones, fixed across seeds by ``--partition-seed``),
ResNet-20 cut ``s``, DSL with its own client sync (``--client-sync``), one local epoch per round,
the DSL reproduction's recipe (SGD 0.05 with momentum, cosine, the pooled head;
``presets/cpu-long.toml``), with which DSL passes 60 % within 10 rounds there; with Adam 1e-3 on
Dirichlet(1) partitions it needed 11 of 20 (``results/compare_strategies_v1``). The
last client is a simulated slow device (``slowdowns``: it sleeps 3x its measured compute, so it
takes 4x the wall time without taking CPU from the others; ``flsplit/slowdown.py``). Ray is told
of one CPU per client, so every client computes at once, as separate devices would, time-sharing
this machine's cores (otherwise Ray runs two at a time on 2 cores and a sleeping straggler holds
one of the two workers). Entries:

- ``sync``: DSL as it is, round-robin; a round ends when the slow client has trained its epoch.
- ``async``: ``asynchronous = true``, ``quorum = 3``: arrival order, a round closes when three
  clients have finished their epoch (the slow one's epoch is then partial; its upload in flight
  is dropped; ``docs/design.md``, *Asynchronous rounds*).

Time is the training phase's wall clock summed over rounds (``round_s``); evaluation time
(``eval_s``) is excluded from the headline because both entries evaluate alike, and reported
beside it (training + evaluation). Flower's start-up is never counted, so a resumed run reads as
an uninterrupted one. The accuracy cost is async's minus sync's mean test accuracy over the last
three rounds, in points. Each run goes through ``flwr run`` in simulation on one SuperLink started
here; runs and checkpoints live in ``--workdir`` (outside the work tree), so the same command
continues an interrupted experiment, losing at most the round in flight. ``stragglers.{json,csv,
md,png}`` in ``experiments/results/`` are rewritten after every round; until every run is
complete their header says PARTIAL.

    python -m experiments.stragglers --data-dir <data-dir> --seeds 0 1 2 --rounds 8 --eval-samples 5000
    python -m experiments.stragglers --plot-only
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from experiments.compare_strategies import last_rounds_mean, mean_std, run_method, run_status
from experiments.tables import RESULTS, markdown_table
from flsplit.launcher import SuperLink

NAME = "stragglers"
TARGET = 0.6
#: Lower targets, reported beside the issue's: a speed-up still reads where a short run stops below 60 %.
LOWER_TARGETS = (0.5, 0.4)
WORKDIR = Path.home() / ".cache" / "flsplit" / "campaign" / NAME
#: Entry -> (its keys beyond the shared ones, label).
ENTRIES: dict[str, tuple[dict[str, Any], str]] = {
    "sync": ({}, "synchronous DSL (round-robin; waits for the slow client)"),
    "async": ({"asynchronous": True, "quorum": 3}, "asynchronous DSL (arrival order, quorum 3 of 4)"),
}
#: What the results keep of each round.
KEPT = (
    "round", "test_accuracy", "test_accuracy_per_client", "round_s", "eval_s", "client_slowdown_s", "train_samples",
    "server_samples", "late_samples", "round_close", "finished_clients", "failed_clients",
)


def shared_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run config every entry and seed shares (everything that makes results comparable)."""
    slowdowns = ",".join(["1"] * (args.clients - 1) + [f"{args.slowdown:g}"])
    partition = {"partition": "iid"} if args.dirichlet_alpha == 0 else {"partition": "dirichlet", "dirichlet-alpha": args.dirichlet_alpha}
    return {
        "strategy": "dsl", "model": "resnet20", "cut": "s", "dataset": "cifar10", **partition, "partition-seed": args.partition_seed,
        "num-server-rounds": args.rounds, "max-batches": args.max_batches, "local-epochs": 1, "batch-size": 128,
        "eval-samples": args.eval_samples, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight-decay": 5e-4, "aux-head": "pooled",
        "lr-schedule": "cosine", "client-sync": args.client_sync, "transport": args.transport, "slowdowns": slowdowns,
    }


def compact(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The kept fields of each round, with the cumulative training time and training + evaluation time."""
    kept, train_s, wall_s = [], 0.0, 0.0
    for r in rounds:
        train_s, wall_s = train_s + r["round_s"], wall_s + r["round_s"] + r["eval_s"]
        kept.append({k: r.get(k) for k in KEPT} | {"cumulative_train_s": train_s, "cumulative_wall_s": wall_s})
    return {"rounds": kept}


def seconds_to(rounds: list[dict[str, Any]], clock: str, target: float = TARGET) -> float | None:
    """``clock`` (``cumulative_train_s`` or ``cumulative_wall_s``) at the first round scoring ``target``; None if none does."""
    hit = next((r for r in rounds if r["test_accuracy"] is not None and r["test_accuracy"] >= target), None)
    return hit[clock] if hit else None


def reach_text(values: list[float | None]) -> str:
    """``mean [min–max] (k of n reached)`` over the seeds that reached the target."""
    hits = [v for v in values if v is not None]
    if not hits:
        return f"not reached (0 of {len(values)})"
    span = f" [{min(hits):.0f}–{max(hits):.0f}]" if len(hits) > 1 else ""
    return f"{statistics.fmean(hits):.0f}{span} ({len(hits)} of {len(values)} reached)"


def complete_runs(results: dict[str, dict[str, Any]], entry: str, seeds: list[int], rounds: int) -> list[dict[str, Any]]:
    by_seed = results.get(entry, {})
    return [by_seed[str(s)] for s in seeds if str(s) in by_seed and len(by_seed[str(s)]["rounds"]) >= rounds]


def summary(results: dict[str, dict[str, Any]], seeds: list[int], rounds: int) -> list[dict[str, Any]]:
    """One row per entry over its complete seeds; the async row also compares itself with sync."""
    rows = []
    last3 = {e: [last_rounds_mean(run["rounds"]) for run in complete_runs(results, e, seeds, rounds)] for e in ENTRIES}
    train_to = {
        target: {e: [seconds_to(run["rounds"], "cumulative_train_s", target) for run in complete_runs(results, e, seeds, rounds)] for e in ENTRIES}
        for target in (TARGET, *LOWER_TARGETS)
    }
    for entry, (_, label) in ENTRIES.items():
        runs = complete_runs(results, entry, seeds, rounds)
        if not runs:
            continue
        final_mean, final_std = mean_std([run["rounds"][-1]["test_accuracy"] for run in runs])
        last_mean, last_std = mean_std(last3[entry])
        row: dict[str, Any] = {
            "entry": label,
            "seeds": f"{len(runs)} of {len(seeds)}",
            f"training time to {100 * TARGET:.0f} % (s)": reach_text(train_to[TARGET][entry]),
            f"training + evaluation time to {100 * TARGET:.0f} % (s)": reach_text([seconds_to(run["rounds"], "cumulative_wall_s") for run in runs]),
            **{f"training time to {100 * target:.0f} % (s)": reach_text(train_to[target][entry]) for target in LOWER_TARGETS},
            "final test acc. (%), mean ± std": f"{100 * final_mean:.1f} ± {100 * final_std:.1f}",
            "last 3 rounds (%), mean ± std": f"{100 * last_mean:.1f} ± {100 * last_std:.1f}",
            "training per round, median (s)": round(statistics.median(r["round_s"] for run in runs for r in run["rounds"]), 1),
            "server samples per round, mean": round(statistics.fmean(r["server_samples"] or r["train_samples"] for run in runs for r in run["rounds"])),
            "slept per round, mean (s)": round(statistics.fmean(r["client_slowdown_s"] for run in runs for r in run["rounds"]), 1),
        }
        row["vs sync: speed-up to each target; last-3 accuracy minus sync's (points)"] = _against_sync(entry, train_to, last3)
        rows.append(row)
    return rows


def _against_sync(entry: str, train_to: dict[float, dict[str, list[float | None]]], last3: dict[str, list[float]]) -> str:
    """Sync's mean time to each target over this entry's (over the seeds that reached it), and this
    entry's last-3 accuracy minus sync's (points)."""
    if entry == "sync" or not last3["sync"] or not last3[entry]:
        return "-"
    cost = 100 * (statistics.fmean(last3[entry]) - statistics.fmean(last3["sync"]))
    speedups = []
    for target, times in train_to.items():
        reached = {e: [t for t in times[e] if t is not None] for e in ("sync", entry)}
        ratio = f"{statistics.fmean(reached['sync']) / statistics.fmean(reached[entry]):.2f}x" if all(reached.values()) else "not reached"
        speedups.append(f"{100 * target:.0f} %: {ratio}")
    return f"{'; '.join(speedups)}; {cost:+.1f}"


def partition_text(settings: dict[str, Any]) -> str:
    return "IID partitions" if settings["partition"] == "iid" else f"Dirichlet α = {settings['dirichlet-alpha']:g}"


def plot(results: dict[str, dict[str, Any]], settings: dict[str, Any], seeds: list[int], path: Path) -> None:
    """Test accuracy against cumulative training time: one line per seed, per entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for index, (entry, (_, label)) in enumerate(ENTRIES.items()):
        for n, seed in enumerate(s for s in seeds if str(s) in results.get(entry, {})):
            rounds = results[entry][str(seed)]["rounds"]
            xs = [r["cumulative_train_s"] / 60 for r in rounds]
            ys = [100 * (r["test_accuracy"] if r["test_accuracy"] is not None else math.nan) for r in rounds]
            ax.plot(xs, ys, marker="o", markersize=3, color=f"C{index}", alpha=0.8, label=label if n == 0 else None)
    for target in (TARGET, *LOWER_TARGETS):
        ax.axhline(100 * target, color="grey", linestyle=":" if target == TARGET else (0, (1, 4)), linewidth=0.8)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("cumulative training time (min; evaluation excluded)")
    ax.set_ylabel(f"test accuracy (%, {'full test split' if not settings['eval-samples'] else str(settings['eval-samples']) + ' test images'})")
    ax.set_title(
        f"CIFAR-10 (JPEG q75), ResNet-20 cut s, DSL, {len(settings['slowdowns'].split(','))} clients, slowdowns {settings['slowdowns']} "
        f"(simulated: sleep)\n{partition_text(settings)}, client sync {settings['client-sync'] or 'none'}, {settings['num-server-rounds']} round(s), "
        f"max-batches {settings['max-batches'] or 'all'}; one line per seed",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: dict[str, dict[str, Any]], settings: dict[str, Any], seeds: list[int], output: Path) -> str:
    """JSON (everything), CSV (a line per entry, seed and round), markdown (the summary) and the plot."""
    output.mkdir(parents=True, exist_ok=True)
    plan = [(entry, seed) for seed in seeds for entry in ENTRIES]
    status = run_status(results, plan, settings["num-server-rounds"])
    (output / f"{NAME}.json").write_text(json.dumps({"settings": settings, "seeds": seeds, "status": status, "entries": results}, indent=2))
    with open(output / f"{NAME}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entry", "seed", *KEPT, "cumulative_train_s", "cumulative_wall_s"])
        for entry, by_seed in results.items():
            for seed, run in by_seed.items():
                for r in run["rounds"]:
                    writer.writerow([entry, seed, *(r.get(k) for k in KEPT), r["cumulative_train_s"], r["cumulative_wall_s"]])
    partial = status["partial"] or status["missing"]
    header = (
        f"# One client slowed {settings['slowdowns'].split(',')[-1]}x: synchronous against asynchronous DSL\n\n"
        + (f"**PARTIAL**: {len(status['complete'])} of {len(plan)} runs complete; missing: {', '.join(status['partial'] + status['missing'])}. "
           "The same command continues it.\n\n" if partial else "")
        + f"CIFAR-10 recompressed as JPEG q75 (lossy), ResNet-20 cut s, {partition_text(settings)}; the slow client is simulated by a sleep of "
        f"(s−1)× its measured compute. Time to {100 * TARGET:.0f} %: training time only (evaluation excluded), then with evaluation. "
        f"Settings: `{json.dumps(settings)}`; {os.cpu_count()} CPU cores.\n\n"
    )
    rows = summary(results, seeds, settings["num-server-rounds"])
    table = markdown_table(rows) if rows else "No run is complete yet.\n"
    (output / f"{NAME}.md").write_text(header + table)
    if results:
        plot(results, settings, seeds, output / f"{NAME}.png")
    return header + table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="", help="where CIFAR-10 is (e.g. a folder holding cifar10-jpeg.tar.gz)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-batches", type=int, default=0, help="batches per client per round (0: a full epoch)")
    parser.add_argument("--eval-samples", type=int, default=0, help="test images per evaluation (0: all 10,000)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--slowdown", type=float, default=4.0, help="the last client's slowdown")
    parser.add_argument("--client-sync", default="", help="DSL's own (none) unless set: none or average")
    parser.add_argument("--transport", default="messages", choices=["messages", "stream"])
    parser.add_argument("--partition-seed", type=int, default=0)
    parser.add_argument("--dirichlet-alpha", type=float, default=0.0, help="0: IID partitions (the default), else Dirichlet(alpha)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--plot-only", action="store_true", help="rewrite the outputs from the JSON")
    args = parser.parse_args()
    saved_path = args.output / f"{NAME}.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    if args.plot_only:
        print(write_outputs(saved["entries"], saved["settings"], saved["seeds"], args.output))
        return
    if not args.data_dir:
        parser.error("--data-dir is required (unless --plot-only)")
    settings = shared_settings(args)
    results: dict[str, dict[str, Any]] = saved.get("entries", {}) if saved.get("settings") == settings else {}
    with tempfile.TemporaryDirectory() as home, SuperLink(Path(home), simulation=True) as link:
        for seed in args.seeds:
            for entry, (own, _) in ENTRIES.items():
                name = f"{entry}-seed{seed}"
                if len(results.get(entry, {}).get(str(seed), {}).get("rounds", [])) >= args.rounds:
                    continue  # complete in the saved results (its checkpoints may be gone)
                keys = settings | own | {"seed": seed, "data-dir": args.data_dir}

                def keep(rounds: list[dict[str, Any]], entry: str = entry, seed: int = seed) -> None:
                    results.setdefault(entry, {})[str(seed)] = compact(rounds)
                    write_outputs(results, settings, args.seeds, args.output)

                print(f"{name}: {args.rounds} rounds", flush=True)
                keep(run_method(link, name, keys, args.clients, args.workdir, keep, ray_cpus=args.clients))
    print(write_outputs(results, settings, args.seeds, args.output))


if __name__ == "__main__":
    main()
