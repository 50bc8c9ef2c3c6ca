"""A mixed fleet: one cut for every device against shallow cuts on the slow ones and deep on the fast.

Four clients of ResNet-20 on CIFAR-10 (the JPEG quality-75 copy: lossy, so accuracies sit a
little below the original's), Dirichlet(1) partitions, DSL with ``client-sync = "average"`` (so
every run has one global model, ``docs/design.md``, *A cut per node*), and in every run the same
simulated device speeds: ``slowdowns = "1,1,2,4"`` (partition 3 computes 4x as long: a sleep of
3x each step's measured compute, so the slow device costs wall time, not the others' CPU). Ray
is told of 4 CPUs, so the four clients compute at once, as four devices would, time-sharing
this machine's cores with each other and the server.

- ``uniform``: every client cuts at ``m`` (block 3).
- ``mixed``: the fast devices cut deeper (``d``, block 4), the 2x one at ``s`` (block 2), the 4x
  one after block 1.

Two ablations (``--ablations``; ``uniform`` and ``mixed`` always run, or are read back) ask where ``mixed`` loses accuracy against ``uniform``:

- ``uniform-1``: every client after block 1, the 4x device's cut in ``mixed``: what DSL's
  shallowest local loss costs on its own, with no mixing.
- ``mixed-no-1``: ``mixed`` with the 4x device at ``s`` (``4,4,s,s``): the same averaging of block
  copies that trained in different roles (a deep client's interior, the server's copy), without a
  client at block 1.

Per run and round it keeps the accuracy, each client's compute, busy time and probed peak
memory, the round's wall time and its bytes. The summary compares the slowest client's busy time
per round and the round's wall time (goal: both at least 40 % lower for ``mixed``) and the final
accuracy (goal: within 2 points). Times are means over rounds 2 onwards: round 1 also decodes the
dataset in every fresh Ray worker. Runs live in ``--workdir`` and resume from their checkpoints;
the results are rewritten after every round, with PARTIAL in the header until every run is done.

    python -m experiments.mixed_cuts --data-dir <data-dir> [--seeds 0 1 2] [--rounds 5] [--max-batches 0] [--ablations uniform-1 mixed-no-1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from experiments.compare_strategies import run_method
from experiments.tables import RESULTS, markdown_table
from flsplit.launcher import SuperLink

NAME = "mixed_cuts"
WORKDIR = Path.home() / ".cache" / "flsplit" / "campaign" / NAME  # outside the work tree, as the other campaigns'
SLOWDOWNS = "1,1,2,4"
#: setup -> (the run's cut: the shallowest, where the server's slice starts; the cut by partition)
SETUPS = {"uniform": ("m", "m,m,m,m"), "mixed": ("1", "4,4,s,1"), "uniform-1": ("1", "1,1,1,1"), "mixed-no-1": ("s", "4,4,s,s")}
#: What the issue compares; the other setups are ablations of the accuracy gap between these two.
COMPARED = ("uniform", "mixed")
KEPT = ("round", "test_accuracy", "test_accuracy_per_cut", "round_s", "eval_s", "bytes_up", "bytes_down",
        "per_client_compute_s", "per_client_busy_s", "per_client_peak_mb", "server_s")


def run_keys(setup: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The run config of one setup and seed."""
    return {
        "strategy": "dsl", "client-sync": "average", "model": "resnet20", "cut": SETUPS[setup][0],
        "cuts": SETUPS[setup][1], "slowdowns": SLOWDOWNS, "dataset": "cifar10", "data-dir": args.data_dir, "partition": "dirichlet",
        "dirichlet-alpha": 1.0, "partition-seed": 0, "seed": seed, "num-server-rounds": args.rounds, "max-batches": args.max_batches,
        "local-epochs": 1, "batch-size": 128, "eval-samples": args.eval_samples, "optimizer": "sgd", "lr": 0.05,
        "lr-schedule": "cosine", "eval-every": 1,
    }


def slowest_busy_s(r: dict[str, Any]) -> float:
    """The busy time of the round's slowest client (compute, encoding and simulated slowdown)."""
    return max(r["per_client_busy_s"].values())


def summary(runs: dict[str, dict[int, list[dict[str, Any]]]], rounds: int) -> list[dict[str, Any]]:
    """One row per setup: means over seeds of complete runs (per-round times averaged over rounds)."""
    rows = []
    for setup, by_seed in runs.items():
        complete = [r for r in by_seed.values() if len(r) >= rounds]
        if not complete:
            continue

        def per_round(key: Any, complete: list[list[dict[str, Any]]] = complete) -> float:
            # Round 1 also decodes the dataset in every fresh Ray worker, so times skip it when there are more.
            return statistics.fmean(statistics.fmean(key(r) for r in (run[1:] or run)) for run in complete)

        accuracies = [100 * run[-1]["test_accuracy"] for run in complete]
        rows.append({
            "setup": setup, "cuts": SETUPS[setup][1], "seeds": len(complete),
            "final test acc (%)": round(statistics.fmean(accuracies), 2),
            "acc std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else None,
            "slowest client busy s/round": round(per_round(slowest_busy_s), 1),
            "round wall s (train)": round(per_round(lambda r: r["round_s"]), 1),
            "server s/round": round(per_round(lambda r: r["server_s"]), 1),
            "MB/round": round(per_round(lambda r: (r["bytes_up"] + r["bytes_down"]) / 1e6), 1),
            "client compute s/round, by partition": [round(per_round(lambda r, p=p: r["per_client_compute_s"][str(p)]), 1) for p in range(4)],
            "client peak MiB, by partition": [round(max(r["per_client_peak_mb"].get(str(p), 0.0) for run in complete for r in run), 1) for p in range(4)],
        })
    return rows


def versus(rows: list[dict[str, Any]]) -> str:
    """The goals, mixed against uniform, as a sentence per measure; each ablation's accuracy against uniform."""
    by = {row["setup"]: row for row in rows}
    if not set(COMPARED) <= set(by):
        return ""  # a compared setup has no complete run yet
    change = lambda key: 100 * (by["mixed"][key] / by["uniform"][key] - 1)  # noqa: E731
    gap = lambda setup: by[setup]["final test acc (%)"] - by["uniform"]["final test acc (%)"]  # noqa: E731
    ablations = "".join(f"{setup} vs uniform: final accuracy {gap(setup):+.2f} points\n" for setup in by if setup not in COMPARED)
    return (
        f"mixed vs uniform: slowest client's busy time {change('slowest client busy s/round'):+.0f} % (goal: -40 % or less), "
        f"round wall time {change('round wall s (train)'):+.0f} % (goal: -40 % or less), "
        f"final accuracy {gap('mixed'):+.2f} points (goal within 2)\n" + ablations
    )


def plot(runs: dict[str, dict[int, list[dict[str, Any]]]], path: Path, round_label: str) -> None:
    """Left: each client's busy time per round (rounds 2 on, as the table); right: test accuracy per round (mean over seeds, thick; each seed, thin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (busy, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(runs)
    for offset, (setup, by_seed) in enumerate(runs.items()):
        rounds = [r for run in by_seed.values() for r in (run[1:] or run)]
        if not rounds:
            continue
        means = [statistics.fmean(r["per_client_busy_s"][str(p)] for r in rounds) for p in range(4)]
        busy.bar([p + (offset - (len(runs) - 1) / 2) * width for p in range(4)], means, width, label=f"{setup} (cuts {SETUPS[setup][1]})")
        longest = max(len(run) for run in by_seed.values())
        curve = [statistics.fmean(100 * run[i]["test_accuracy"] for run in by_seed.values() if len(run) > i) for i in range(longest)]
        line, = accuracy.plot(range(1, longest + 1), curve, marker="o", label=f"{setup} (mean of {len(by_seed)} seeds)")
        for run in by_seed.values():
            accuracy.plot(range(1, len(run) + 1), [100 * r["test_accuracy"] for r in run], color=line.get_color(), alpha=0.35, linewidth=0.8)
    busy.set_xticks(range(4), [f"client {p}\nslowdown {s}x" for p, s in enumerate(SLOWDOWNS.split(","))])
    busy.set_ylabel("busy seconds per round (mean)")
    busy.set_title("who holds the round up")
    busy.legend()
    accuracy.set_xlabel(round_label)
    accuracy.xaxis.get_major_locator().set_params(integer=True)
    accuracy.set_ylabel("test accuracy (%)")
    accuracy.set_title("global model (JPEG CIFAR-10)")
    accuracy.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(runs: dict[str, dict[int, list[dict[str, Any]]]], args: argparse.Namespace) -> str:
    planned = len(args.setups) * len(args.seeds)
    finished = sum(len(run) >= args.rounds for by_seed in runs.values() for run in by_seed.values())
    rows = summary(runs, args.rounds)
    header = "" if finished == planned else f"PARTIAL: {finished} of {planned} runs complete; the same command continues.\n\n"
    text = header + versus(rows) + "\n" + (markdown_table(rows) if rows else "(no complete run yet)\n")
    RESULTS.mkdir(exist_ok=True)
    settings = {"slowdowns": SLOWDOWNS, "setups": {s: SETUPS[s] for s in args.setups}, "rounds": args.rounds, "max_batches": args.max_batches, "seeds": args.seeds}
    payload = {"settings": settings, "partial": finished < planned, "summary": rows,
               "runs": {s: {str(seed): [{k: r.get(k) for k in KEPT} for r in run] for seed, run in by_seed.items()} for s, by_seed in runs.items()}}
    (RESULTS / f"{NAME}.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / f"{NAME}.md").write_text(text)
    budget = "one local epoch" if not args.max_batches else f"{args.max_batches} batches per client"
    plot(runs, RESULTS / f"{NAME}.png", f"round ({budget})")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-batches", type=int, default=0, help="batches per client and round; 0: a whole local epoch")
    parser.add_argument("--eval-samples", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--ablations", nargs="*", default=[], choices=[s for s in SETUPS if s not in COMPARED], help="setups run beside the two compared")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    args = parser.parse_args()
    args.setups = [*COMPARED, *args.ablations]  # the results always hold the comparison
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {setup: {} for setup in args.setups}
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "flwr-home") as link:
        for seed in args.seeds:
            for setup in args.setups:
                name = f"{setup}-seed{seed}-r{args.rounds}-b{args.max_batches}"
                print(f"[{setup} seed {seed}] cuts {SETUPS[setup][1]}, slowdowns {SLOWDOWNS}", flush=True)

                def record(rounds: list[dict[str, Any]], setup: str = setup, seed: int = seed) -> None:
                    runs[setup][seed] = rounds
                    write_outputs(runs, args)

                record(run_method(link, name, run_keys(setup, seed, args), 4, args.workdir, on_round=record, ray_cpus=4))
    print(write_outputs(runs, args))


if __name__ == "__main__":
    main()
