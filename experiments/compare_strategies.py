"""Accuracy against cumulative communication for the split-learning family, FedAvg and a centralised row.

Every entry (``ENTRIES``) on all of CIFAR-10 (ResNet-20 cut ``s``), 3 clients with one
Dirichlet(1) partition (``--partition-seed``, fixed across seeds), one local epoch per round,
the cosine schedule over ``--rounds``, the full 10,000-image test split, each through
``flwr run`` in simulation on one SuperLink started here, one after another. Communication is
the ledger's training traffic (``bytes_up + bytes_down``: activations, labels, gradients, model
sync and relay, aligned auxiliary models; control records and evaluation excluded), in GB = 1e9.

The headline rows serve every method with one shared top the same way: sequentially, in a
seeded random client order per round (``serve-order = "shuffled"``, as Thapa et al.'s code).
Rows marked "reference order" serve as their own reference does (FSL-SAGE's: fixed order,
sequential). The centralised rows are one client holding all 50,000 images (``fedavg`` with
one client: a plain training loop over the whole network), with SGD and with Adam.

Two phases, both resumable with the same command:

1. ``--sweep``: every method with each optimizer candidate (``CANDIDATES``) for ``--sweep-rounds``
   full epochs under the cosine schedule, scored on the whole test split after the last; the
   best picks the method's optimizer (``compare_sweep.json``/``.md``).
2. The comparison: every entry with its chosen optimizer, for each of ``--seeds``, one seed of
   every entry before the next seed. Runs and checkpoints live in ``--workdir`` (outside the
   work tree), so an interrupted run continues with ``resume = true`` and loses at most the
   round in flight. ``compare_strategies.{json,md,png}`` are rewritten after every round; until
   every run is complete their header says PARTIAL and names what is missing.

    python -m experiments.compare_strategies --sweep --data-dir <data-dir>
    python -m experiments.compare_strategies --data-dir <data-dir> --seeds 0 1 2
    python -m experiments.compare_strategies --plot-only                     # redraw from the JSON
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from experiments.tables import RESULTS, markdown_table
from flsplit.config import parse_run_config
from flsplit.launcher import SuperLink, run_config_text
from flsplit.optim import round_lr
from flsplit.results import read_metrics

NAME = "compare_strategies"
SWEEP = "compare_sweep"
GB = 1e9
TARGETS = (0.5, 0.6, 0.7)
#: Checkpoints are large and must survive a fresh clone: outside the work tree.
WORKDIR = Path.home() / ".cache" / "flsplit" / "campaign" / NAME

#: Method -> run-config keys of its own. fsl-sage aligns every 5 rounds (an interval of the
#: paper's ablation) with the reference's budget: 100 Adam epochs on a 1,000-sample buffer
#: (about 4 min per client per alignment on 2 cores). Both q-methods upload every 5th batch and
#: use the same estimator-shaped auxiliary model, ``resnet-mirror`` (the top's first stage:
#: the rest of the cut's stage and the next stage), as the FSL-SAGE paper's CSE-FSL baseline
#: trains and averages the same ResNet stage; its averaging is counted up and down, as the
#: reference counts 2x the auxiliary model per client per round.
METHODS: dict[str, dict[str, object]] = {
    "fsl-sage": {"upload-every": 5, "align-every": 5, "align-epochs": 100, "align-buffer": 1000, "aux-head": "resnet-mirror"},
    "cse-fsl": {"upload-every": 5, "aux-head": "resnet-mirror"},
    "dsl": {"aux-head": "pooled"},
    "csl": {},
    "splitfed-v2": {},
    "splitfed-v1": {},
    "fedavg": {},
}
SHUFFLED = {"serve-order": "shuffled"}
#: Entry -> (method, its keys beyond the method's, label). One row of the table each.
ENTRIES: dict[str, tuple[str, dict[str, object], str]] = {
    "fedavg": ("fedavg", {}, "FedAvg"),
    "splitfed-v1": ("splitfed-v1", {}, "SplitFed-V1 (MS)"),
    "splitfed-v2": ("splitfed-v2", SHUFFLED, "SplitFed-V2 (SS)"),
    "csl-relay": ("csl", SHUFFLED | {"client-sync": "relay"}, "SL, relayed client slice (vanilla split learning)"),
    "csl": ("csl", SHUFFLED | {"client-sync": "none"}, "parallel SL, no client sync"),
    "dsl": ("dsl", SHUFFLED | {"client-sync": "none"}, "DSL, no client sync"),
    "cse-fsl": ("cse-fsl", SHUFFLED, "CSE-FSL"),
    "fsl-sage": ("fsl-sage", SHUFFLED, "FSL-SAGE"),
    "fsl-sage-ref": ("fsl-sage", {"serve-order": "sequential"}, "FSL-SAGE, reference order (fixed, sequential)"),
    "cse-fsl-ref": ("cse-fsl", {"serve-order": "sequential"}, "CSE-FSL, reference order (fixed, sequential)"),
    "centralised-sgd": ("fedavg", {"clients": 1, "partition": "iid"}, "centralised (1 client, all data), SGD"),
    "centralised-adam": ("fedavg", {"clients": 1, "partition": "iid"}, "centralised (1 client, all data), Adam"),
}
#: Entries that run one fixed optimizer whatever the sweep chose.
FIXED_OPTIMIZER = {"centralised-sgd": "sgd-0.05-warmup", "centralised-adam": "adam-0.001"}
#: Optimizer candidates of the sweep: SGD + momentum with a one-round warm-up at two rates (the
#: DSL paper's family; warm-up as CIFAR ResNet recipes use it), and Adam at the rate of the
#: FSL-SAGE and CSE-FSL references.
CANDIDATES: dict[str, dict[str, object]] = {
    "sgd-0.05-warmup": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight-decay": 5e-4, "lr-warmup": 1},
    "sgd-0.1-warmup": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight-decay": 5e-4, "lr-warmup": 1},
    "adam-0.001": {"optimizer": "adam", "lr": 0.001, "weight-decay": 1e-4},
}
LABELS = {entry: label for entry, (_, _, label) in ENTRIES.items()}
#: GB to reach about 81 % on CIFAR-10 with ResNet-18, read off FSL-SAGE's reference plots.
#: Context only: another model, another cut (128 x 4 x 4 floats per sample against ResNet-20
#: cut s's 16 x 32 x 32), another target and schedule, so not a like-for-like figure.
PAPER_GB = {"fsl-sage": 12.2, "cse-fsl": 26.0, "splitfed-v1": 60.2, "fedavg": 70.0, "splitfed-v2": 109.1}
PAPER_COLUMN = "context, not like-for-like: FSL-SAGE paper, ResNet-18 cut after layer2, GB to ~81 %"
KEPT = (
    "round", "test_accuracy", "test_loss", "test_accuracy_per_client", "aux_accuracy", "train_loss", "bytes_up", "bytes_down",
    "bytes_up_activations", "bytes_up_labels", "bytes_down_gradients", "bytes_model_sync", "bytes_model_relay",
    "bytes_down_aux_model", "round_s", "eval_s", "train_messages", "align_index", "align_before_cosine", "align_after_cosine",
    "held_out_cosine", "estimator_params", "estimator_bytes",
)
#: What each run's ``config.json`` records about its protocol (the keys as resolved).
FACTS = ("client_sync", "serving_order", "transport")


def shared_settings(rounds: int, max_batches: int, eval_samples: int, partition_seed: int, schedule: str) -> dict[str, Any]:
    """The run config shared by every entry and seed (everything that makes results comparable)."""
    return {
        "model": "resnet20", "cut": "s", "dataset": "cifar10", "partition": "dirichlet", "dirichlet-alpha": 1.0,
        "num-server-rounds": rounds, "max-batches": max_batches, "local-epochs": 1, "batch-size": 128,
        "eval-samples": eval_samples, "lr-schedule": schedule, "partition-seed": partition_seed, "clients": 3,
    }


def entry_keys(entry: str, settings: dict[str, Any], candidate: str, seed: int, data_dir: str) -> tuple[dict[str, Any], int]:
    """The run config of one entry and seed, and its number of clients."""
    method, own, _ = ENTRIES[entry]
    keys = settings | METHODS[method] | own | CANDIDATES[candidate] | {"strategy": method, "seed": seed, "data-dir": data_dir}
    clients = int(keys.pop("clients"))
    return keys, clients


def run_method(
    link: SuperLink,
    name: str,
    keys: dict[str, Any],
    clients: int,
    workdir: Path,
    on_round: Callable[[list[dict[str, Any]]], None] | None = None,
    ray_cpus: int | None = None,
) -> list[dict[str, Any]]:
    """``flwr run`` one configuration to its last round, resuming from its checkpoint if it has one.

    Prints a line per round as it lands and hands the rounds so far to ``on_round`` (so a
    partial run's results are kept); returns every round's metrics. ``ray_cpus``: see
    ``SuperLink.launch`` (every client at once: ``ray_cpus = clients``).
    """
    rounds_wanted = int(keys["num-server-rounds"])
    metrics_path = workdir / name / "metrics.jsonl"
    done = read_metrics(metrics_path) if metrics_path.exists() else []
    if len(done) >= rounds_wanted:
        return done
    resume = (workdir / name / "checkpoint.pt").exists()
    keys = keys | {"results-dir": str(workdir.resolve()), "run-name": name, "resume": resume}
    if resume:
        print(f"  [{name}] resuming after round {len(done)}", flush=True)
    process = link.launch(run_config_text(keys), num_supernodes=clients, ray_cpus=ray_cpus)
    tails = [_drain(stream) for stream in (process.stdout, process.stderr)]  # a full pipe would block flwr run
    seen, started = len(done), time.monotonic()
    while True:
        finished = process.poll() is not None
        rounds = read_metrics(metrics_path) if metrics_path.exists() else []
        for r in rounds[seen:]:
            scored = "not scored" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f} %"
            print(
                f"  [{name}] round {r['round']}/{rounds_wanted}: test acc {scored}, "
                f"round {r['round_s'] + r['eval_s']:.0f} s, {time.monotonic() - started:.0f} s elapsed",
                flush=True,
            )
        if on_round is not None and len(rounds) > seen:
            on_round(rounds)
        seen = len(rounds)
        if finished:
            break
        time.sleep(5.0)
    process.wait()
    if process.returncode != 0 or seen < rounds_wanted:
        output = "\n".join("".join(tail) for tail in tails)
        raise SystemExit(f"{name} failed:\n{output[-6000:]}")
    return rounds


def _drain(stream: IO[str] | None) -> deque[str]:
    """Read ``stream`` to its end in a thread; keep its last 200 lines."""
    tail: deque[str] = deque(maxlen=200)
    if stream is not None:
        threading.Thread(target=lambda: tail.extend(stream), daemon=True).start()
    return tail


def compact(rounds: list[dict[str, Any]], facts: dict[str, Any]) -> dict[str, Any]:
    """What the results keep of a run: a few fields per round, cumulative GB, its wall clock and
    the protocol facts of its ``config.json`` (client sync, serving order, transport).

    The wall clock is the sum of the rounds' training and evaluation time (Flower's start-up
    and any interruption excluded), so a resumed run reads the same as an uninterrupted one.
    """
    kept, cumulative = [], 0
    for r in rounds:
        cumulative += r["bytes_up"] + r["bytes_down"]
        kept.append({k: r.get(k) for k in KEPT} | {"cumulative_gb": cumulative / GB})
    return {"rounds": kept, "wall_s": sum(r["round_s"] + r["eval_s"] for r in rounds)} | {k: facts.get(k) for k in FACTS}


# --- aggregation over seeds (pure functions of the kept rounds) ---


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def last_rounds_mean(rounds: list[dict[str, Any]], k: int = 3) -> float:
    """Mean test accuracy of the last ``k`` scored rounds: less fragile than the final round alone."""
    scored = [r["test_accuracy"] for r in rounds if r["test_accuracy"] is not None]
    return statistics.fmean(scored[-k:])


def gb_to_target(rounds: list[dict[str, Any]], target: float) -> float | None:
    """Cumulative GB at the first round whose test accuracy reaches ``target``; None if none does."""
    hit = next((r for r in rounds if r["test_accuracy"] is not None and r["test_accuracy"] >= target), None)
    return hit["cumulative_gb"] if hit else None


def reach_text(runs: list[dict[str, Any]], target: float) -> str:
    """``mean [min–max] (k of n reached)`` GB to ``target`` over the seeds that reached it."""
    hits = [gb for gb in (gb_to_target(run["rounds"], target) for run in runs) if gb is not None]
    if not hits:
        return f"not reached (0 of {len(runs)})"
    span = f" [{min(hits):.2f}–{max(hits):.2f}]" if len(hits) > 1 else ""
    return f"{statistics.fmean(hits):.2f}{span} ({len(hits)} of {len(runs)} reached)"


def per_client_text(runs: list[dict[str, Any]]) -> str:
    """Each client's final test accuracy (%), mean over seeds, for runs that score several slices."""
    lists = [run["rounds"][-1].get("test_accuracy_per_client") or [] for run in runs]
    if not lists or min(len(x) for x in lists) < 2:
        return "-"
    width = min(len(x) for x in lists)
    return ", ".join(f"{100 * statistics.fmean(x[i] for x in lists):.1f}" for i in range(width))


def summary(results: dict[str, dict[str, Any]], planned_rounds: int, seeds: list[int]) -> list[dict[str, Any]]:
    """One row per entry, over its complete seeds: protocol, accuracy as mean ± std, GB to each target."""
    rows = []
    for entry, by_seed in results.items():
        runs = [by_seed[str(seed)] for seed in seeds if str(seed) in by_seed and len(by_seed[str(seed)]["rounds"]) >= planned_rounds]
        if not runs:
            continue
        final_mean, final_std = mean_std([run["rounds"][-1]["test_accuracy"] for run in runs])
        last_mean, last_std = mean_std([last_rounds_mean(run["rounds"]) for run in runs])
        first = runs[0]
        row: dict[str, Any] = {
            "entry": LABELS.get(entry, entry),
            "client sync": first.get("client_sync") or "-",
            "serving order": first.get("serving_order") or "-",
            "optimizer": first.get("optimizer", "-"),
            "transport": first.get("transport") or "-",
            "seeds": f"{len(runs)} of {len(seeds)}",
            "final test acc. (%), mean ± std": f"{100 * final_mean:.1f} ± {100 * final_std:.1f}",
            "last 3 rounds (%), mean ± std": f"{100 * last_mean:.1f} ± {100 * last_std:.1f}",
        }
        for target in TARGETS:
            row[f"GB to {100 * target:.0f} %"] = reach_text(runs, target)
        row["total GB"] = round(statistics.fmean(run["rounds"][-1]["cumulative_gb"] for run in runs), 3)
        row["per-client final acc. (%)"] = per_client_text(runs)
        row["training per round, median (s)"] = round(statistics.median(r["round_s"] for run in runs for r in run["rounds"]), 1)
        held_out = [r["held_out_cosine"] for run in runs for r in run["rounds"] if r.get("held_out_cosine") is not None]
        aligned = [r["align_after_cosine"] for run in runs for r in run["rounds"] if r.get("align_after_cosine") is not None]
        row["estimator cosine: in sample after alignment / out of sample, means"] = (
            f"{statistics.fmean(aligned):.2f} / {statistics.fmean(held_out):.2f}" if aligned and held_out else "-"
        )
        row[PAPER_COLUMN] = PAPER_GB.get(entry, "-")
        rows.append(row)
    return rows


def plot(results: dict[str, dict[str, Any]], settings: dict[str, Any], seeds: list[int], path: Path) -> None:
    """Test accuracy against cumulative communication: the mean over seeds, with the seeds' range as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for entry, by_seed in results.items():
        runs = [by_seed[str(seed)]["rounds"] for seed in seeds if str(seed) in by_seed and by_seed[str(seed)]["rounds"]]
        if not runs:
            continue
        length = min(len(rounds) for rounds in runs)
        xs = [statistics.fmean(rounds[i]["cumulative_gb"] for rounds in runs) for i in range(length)]
        accs = [[100 * (rounds[i]["test_accuracy"] or math.nan) for rounds in runs] for i in range(length)]
        (line,) = ax.plot(xs, [statistics.fmean(a) for a in accs], marker="o", markersize=2.5, label=f"{LABELS.get(entry, entry)} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(xs, [min(a) for a in accs], [max(a) for a in accs], color=line.get_color(), alpha=0.2)
    for target in TARGETS:
        ax.axhline(100 * target, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative training communication (GB, log scale)")
    ax.set_ylabel("test accuracy (%, full 10,000-image test split)")
    ax.set_title(
        f"CIFAR-10 (all 50,000 images, JPEG q75), ResNet-20 cut s, {settings['clients']} clients, Dirichlet α = "
        f"{settings['dirichlet-alpha']:g}\none local epoch per round, cosine over {settings['num-server-rounds']} rounds; "
        "line: mean over seeds, band: their range",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_status(results: dict[str, dict[str, Any]], plan: list[tuple[str, int]], planned_rounds: int) -> dict[str, list[str]]:
    """The planned runs as ``entry/seed``: complete, partial (with rounds done) and not started."""
    status: dict[str, list[str]] = {"complete": [], "partial": [], "missing": []}
    for entry, seed in plan:
        run = results.get(entry, {}).get(str(seed))
        if run is None:
            status["missing"].append(f"{entry}/{seed}")
        elif len(run["rounds"]) >= planned_rounds:
            status["complete"].append(f"{entry}/{seed}")
        else:
            status["partial"].append(f"{entry}/{seed} ({len(run['rounds'])} of {planned_rounds} rounds)")
    return status


def write_outputs(results: dict[str, dict[str, Any]], settings: dict[str, Any], plan: list[tuple[str, int]], output: Path) -> str:
    """JSON (everything), CSV (entry, seed, round, accuracy, GB), markdown table and plot.

    Written after every round: until every planned run is complete the markdown's first line
    and the JSON's ``status`` say PARTIAL and name the runs still missing.
    """
    output.mkdir(parents=True, exist_ok=True)
    planned = settings["num-server-rounds"]
    seeds = sorted({seed for _, seed in plan})
    status = run_status(results, plan, planned)
    payload = {"settings": settings, "seeds": seeds, "plan": plan, "status": status, "entries": results}
    (output / f"{NAME}.json").write_text(json.dumps(payload, indent=1))
    with open(output / f"{NAME}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entry", "seed", "round", "test_accuracy", "cumulative_gb"])
        for entry, by_seed in results.items():
            for seed, run in by_seed.items():
                writer.writerows([entry, seed, r["round"], r["test_accuracy"], r["cumulative_gb"]] for r in run["rounds"])
    state = "COMPLETE" if not (status["partial"] or status["missing"]) else (
        f"PARTIAL: {len(status['complete'])} of {len(plan)} runs complete; in progress or interrupted: "
        f"{', '.join(status['partial']) or 'none'}; not started: {', '.join(status['missing']) or 'none'}. "
        "Rows below count only complete seeds"
    )
    header = (
        f"{state}.\n\nSettings: {json.dumps(settings)}; seeds {seeds} (model init, data order, augmentation, "
        "serving order; the partition is fixed by partition-seed).\n\nData: CIFAR-10 recompressed as JPEG "
        "(quality 75, 4:2:0 chroma), lossy, so absolute accuracies sit below those on the original PNGs. "
        "Final and last-3-rounds accuracies are mean ± sample std over seeds; GB to a target is the first "
        "crossing, as mean [range] over the seeds that reached it. No accuracy here is selected on the test "
        "split. A centralised row's GB is only its one client's model going to the server for scoring. The last column is context from another model and cut (the FSL-SAGE paper's ResNet-18 cut "
        "after layer2, 2,048 floats per sample against 16,384 here), not a like-for-like figure.\n\n"
    )
    rows = summary(results, planned, seeds)
    table = markdown_table(rows) if rows else "No run is complete yet.\n"
    (output / f"{NAME}.md").write_text(header + table)
    if results:
        plot(results, settings, seeds, output / f"{NAME}.png")
    return header + table


def completed_results(path: Path, settings: dict[str, Any], chosen: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The runs ``path`` holds complete, under these settings and the optimizer now chosen.

    Checkpoints live in ``--workdir``, so a fresh machine has none; the committed JSON keeps
    finished runs, which are not rerun. A partial run without its checkpoint starts again.
    """
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("settings") != settings or "entries" not in saved:
        return {}
    complete = set(saved["status"]["complete"])
    kept: dict[str, dict[str, Any]] = {}
    for entry, by_seed in saved["entries"].items():
        for seed, run in by_seed.items():
            if f"{entry}/{seed}" in complete and run.get("optimizer") == chosen.get(entry):
                kept.setdefault(entry, {})[seed] = run
    return kept


# --- the optimizer sweep ---

#: Entries whose optimizer is their headline twin's (the sweep runs the headline entries only).
SWEPT_AS = {"fsl-sage-ref": "fsl-sage", "cse-fsl-ref": "cse-fsl"}


def swept_entries(entries: list[str]) -> list[str]:
    """The entries the sweep runs for ``entries``: their headline twins, without the fixed ones."""
    swept = [SWEPT_AS.get(e, e) for e in entries if e not in FIXED_OPTIMIZER]
    return list(dict.fromkeys(swept))


def optimizer_of(entry: str, chosen: dict[str, str]) -> str | None:
    """The optimizer candidate an entry runs with: fixed, or the sweep's choice (None: not swept yet)."""
    return FIXED_OPTIMIZER.get(entry) or chosen.get(SWEPT_AS.get(entry, entry))


def sweep(link: SuperLink, args: argparse.Namespace, entries: list[str]) -> dict[str, Any]:
    """Each entry with each optimizer candidate for ``--sweep-rounds`` full epochs; pick the best per entry."""
    settings = shared_settings(args.sweep_rounds, args.max_batches, args.eval_samples, args.partition_seed, "cosine")
    settings |= {"eval-every": args.sweep_rounds}
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"{SWEEP}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    runs: dict[str, dict[str, float]] = saved.get("runs", {}) if saved.get("settings") == settings else {}
    todo = [(e, c) for e in swept_entries(entries) for c in CANDIDATES if c not in runs.get(e, {})]
    planned = len(swept_entries(entries)) * len(CANDIDATES)
    print(f"sweep: {len(todo)} runs to do; settings {settings}", flush=True)
    for i, (entry, candidate) in enumerate(todo, start=1):
        print(f"[sweep {i}/{len(todo)}] {entry} {candidate}", flush=True)
        keys, clients = entry_keys(entry, settings, candidate, args.sweep_seed, str(args.data_dir))
        rounds = run_method(link, f"{entry}-{candidate}", keys, clients, args.workdir / "sweep")
        runs.setdefault(entry, {})[candidate] = rounds[-1]["test_accuracy"]
        _write_sweep(path, settings, runs, planned)
    return _write_sweep(path, settings, runs, planned)


def _write_sweep(path: Path, settings: dict[str, Any], runs: dict[str, dict[str, float]], planned: int) -> dict[str, Any]:
    """The sweep's JSON and table; until ``planned`` runs are done, the table's first line says PARTIAL."""
    chosen = {e: max(accs, key=accs.get) for e, accs in runs.items() if len(accs) == len(CANDIDATES)}
    sweep_result = {"settings": settings, "candidates": CANDIDATES, "runs": runs, "chosen": chosen}
    path.write_text(json.dumps(sweep_result, indent=1))
    rows = [
        {"entry": LABELS.get(e, e), **{c: round(100 * accs[c], 1) if c in accs else "-" for c in CANDIDATES}, "chosen": chosen.get(e, "-")}
        for e, accs in runs.items()
    ]
    rounds, batches = settings["num-server-rounds"], settings["max-batches"]
    epoch = "one full local epoch" if batches == 0 else f"{batches} batches per client"
    header = (
        f"Optimizer sweep: test accuracy (%) after {rounds} rounds of {epoch}, the cosine schedule over those "
        f"rounds (SGD after a one-round linear warm-up, so its rates per round are {rate_shape(CANDIDATES['sgd-0.05-warmup'], rounds)}"
        f" of lr, Adam's {rate_shape(CANDIDATES['adam-0.001'], rounds)}), scored once, after the last round, on "
        f"{sweep_test_images(settings)}. One seed. Settings: {json.dumps(settings)}\n\n"
    )
    done = sum(len(accs) for accs in runs.values())
    if done < planned:
        header = f"PARTIAL: {done} of {planned} sweep runs complete; the same command (`--sweep`) continues it.\n\n" + header
    path.with_suffix(".md").write_text(header + markdown_table(rows))
    return sweep_result


def rate_shape(candidate: dict[str, object], rounds: int) -> str:
    """The candidate's rate in each of ``rounds`` rounds as fractions of its ``lr`` (``flsplit.optim``)."""
    config = parse_run_config(dict(candidate) | {"lr-schedule": "cosine", "num-server-rounds": rounds})
    return ", ".join(f"{round_lr(config, r) / config.lr:.2f}" for r in range(1, rounds + 1))


def sweep_test_images(settings: dict[str, Any]) -> str:
    """What the sweep's score is measured on, as the loader picks it (``flsplit.data.eval_indices``)."""
    n = settings["eval-samples"]
    return "the whole 10,000-image test split" if n == 0 else f"a fixed random subset of {n} test images (seeded)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="where cifar10-jpeg.tar.gz (or another CIFAR-10 layout) is")
    # 10 rounds, not 20: with 3 seeds of 12 entries, 20 rounds would not fit a 20-25 CPU-hour
    # budget on 2 cores (experiments/README.md, compute plan); a cosine run cannot be lengthened
    # on resume, so the length is fixed here.
    parser.add_argument("--rounds", type=int, default=10, help="rounds of one local epoch (the cosine schedule spans them)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run of every entry per seed, seed by seed")
    parser.add_argument("--partition-seed", type=int, default=0, help="the Dirichlet partition, the same for every seed")
    parser.add_argument("--entries", default=",".join(ENTRIES), help="comma-separated subset of ENTRIES, in run order")
    parser.add_argument("--sweep", action="store_true", help="run the optimizer sweep (phase 1) instead of the comparison")
    parser.add_argument("--sweep-rounds", type=int, default=2, help="full epochs per sweep run")
    parser.add_argument("--sweep-seed", type=int, default=0)
    parser.add_argument("--max-batches", type=int, default=0, help="batches per client per round (0: all; >0 only for a smoke test)")
    parser.add_argument("--eval-samples", type=int, default=0, help="test images scored (0: all; >0 only for a smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the result files")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="run folders and checkpoints (large; outside the repository)")
    parser.add_argument("--plot-only", action="store_true", help="redraw table and plot from the JSON")
    args = parser.parse_args()

    entries = [e for e in args.entries.split(",") if e]
    unknown = sorted(set(entries) - set(ENTRIES))
    if unknown:
        raise SystemExit(f"--entries: unknown {unknown}; choose from {list(ENTRIES)}")
    saved_path = args.output / f"{NAME}.json"
    if args.plot_only:
        if not saved_path.exists():
            raise SystemExit(f"--plot-only: no results at {saved_path}")
        saved = json.loads(saved_path.read_text())
        plan = [(entry, int(seed)) for entry, seed in saved["plan"]]
        print(write_outputs(saved["entries"], saved["settings"], plan, args.output))
        return
    if args.data_dir is None:
        raise SystemExit("--data-dir is required (the folder holding cifar10-jpeg.tar.gz)")
    args.data_dir = args.data_dir.resolve()
    # Flower's own priorities (Ray's workers at nice 15 below the ServerApp): the server, which
    # serves every client, is the critical path (experiments/README.md).
    with tempfile.TemporaryDirectory() as tmp, SuperLink(Path(tmp) / "flwr-home") as link:
        if args.sweep:
            sweep(link, args, entries)
            print((args.output / f"{SWEEP}.md").read_text())
            return
        sweep_path = args.output / f"{SWEEP}.json"
        chosen = json.loads(sweep_path.read_text())["chosen"] if sweep_path.exists() else {}
        absent = [e for e in entries if optimizer_of(e, chosen) is None]
        if absent:
            raise SystemExit(f"no sweep result for {absent}: run with --sweep first")
        settings = shared_settings(args.rounds, args.max_batches, args.eval_samples, args.partition_seed, "cosine")
        # Complete runs of every entry are kept, also of entries this command does not run.
        results = completed_results(saved_path, settings, {e: optimizer_of(e, chosen) for e in ENTRIES})
        plan = [(entry, seed) for seed in args.seeds for entry in entries]  # one seed of everything first
        plan += [(entry, int(seed)) for entry, by_seed in results.items() for seed in by_seed if (entry, int(seed)) not in plan]
        for i, (entry, seed) in enumerate(plan, start=1):
            if str(seed) in results.get(entry, {}):
                print(f"[{i}/{len(plan)}] {entry} seed {seed}: complete in {saved_path.name}, kept", flush=True)
                continue
            candidate = optimizer_of(entry, chosen)
            assert candidate is not None
            print(f"[{i}/{len(plan)}] {entry} seed {seed} with {candidate}", flush=True)
            keys, clients = entry_keys(entry, settings, candidate, seed, str(args.data_dir))
            name = f"{entry}-{candidate}-seed{seed}"

            def record(rounds: list[dict[str, Any]], entry: str = entry, seed: int = seed, name: str = name, candidate: str = candidate) -> None:
                config = args.workdir / name / "config.json"
                facts = json.loads(config.read_text()) if config.exists() else {}
                results.setdefault(entry, {})[str(seed)] = compact(rounds, facts) | {"optimizer": candidate}
                write_outputs(results, settings, plan, args.output)

            record(run_method(link, name, keys, clients, args.workdir, record))
    print(write_outputs(results, settings, plan, args.output))


if __name__ == "__main__":
    main()
