"""What leaks at each cut and strategy, and what the defences buy: runs, then ``flsplit leak`` on them (issue 30).

Three grids (``--grids``), every run 2 clients of ResNet-20 on CIFAR-10 (``--data-dir``; the copy
here, ``cifar10-jpeg.tar.gz``, is CIFAR-10 recompressed as JPEG quality 75, lossy, so absolute
accuracies sit below the PNG originals'), one Dirichlet(1) partition fixed across seeds, SGD 0.05
with momentum under a cosine schedule (the DSL reproduction's recipe), ``--rounds`` rounds of
``--max-batches`` batches of 128 per client, the full test split, ``keep-rounds = "1,R"``:

- ``cuts``: label-sharing ``csl``, ``dsl`` and ``fsl-sage`` at cuts ``s`` (2 of 9 blocks), ``m``
  (3) and 6 (after stage 2). Is DSL's activation easier to read than CSL's at the same cut?
- ``u-shaped``: ``csl-u`` and ``dsl-u`` at cut ``s``, undefended and with ``gradient-noise`` 1 and
  3: accuracy, and the norm and direction attacks' leak AUC on the ``dL/dz2`` the server received,
  at round 1 (early in training, the sanity check) and round R.
- ``defences``: ``csl`` and ``dsl`` at cut ``s`` with ``activation-noise`` 0.1, 0.3, 1; ``nopeek-weight``
  0.1, 0.5, 2; ``label-dp = "rr"`` with ε 1, 2, 4. Each against its undefended twin of ``cuts``
  and the issue's bars: label-probe accuracy ≤ 30 %, or 10× the undefended reconstruction MSE,
  at ≤ 3 points of accuracy.

After a run's last round, ``flsplit leak`` attacks client 0 at round R (and round 1 for the
U-shaped runs) with the attack settings of ``--aux-size`` and the rest (the CLI's defaults; the
auxiliary set is class-balanced test images, disjoint from the attacked test images). Each
attacked round's ``leak.json``, ``leak.md`` and reconstruction grid are kept in the run folder as
``leak-r<round>.*``. Runs live in ``--workdir`` (outside the work tree) and resume from their
checkpoints; a run whose leak files exist is not attacked again. ``privacy.{json,csv,md,png}``
in ``experiments/results/`` are rewritten after every run and attack, PARTIAL in the header until
every planned run is attacked.

    python -m experiments.privacy --data-dir <data-dir> --grids cuts u-shaped --seeds 0 1
    python -m experiments.privacy --data-dir <data-dir> --grids defences --seeds 0
    python -m experiments.privacy --plot-only
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from experiments.compare_strategies import mean_std, run_method
from experiments.tables import RESULTS, markdown_table
from flsplit.launcher import SuperLink

NAME = "privacy"
WORKDIR = Path.home() / ".cache" / "flsplit" / "campaign" / NAME
#: The issue's bars for a defence: label inference at most this, or this many times the undefended MSE ...
PROBE_BAR, MSE_BAR = 0.30, 10.0
#: ... at no more than this many points of accuracy below the undefended twin.
ACCURACY_BAR = 3.0


def entries() -> dict[str, dict[str, Any]]:
    """Every entry: its grid, strategy, cut, defence keys, the undefended twin it is held against, and the rounds attacked."""
    found: dict[str, dict[str, Any]] = {}
    for strategy in ("csl", "dsl", "fsl-sage"):
        for cut in ("s", "m", 6):
            found[f"{strategy}-{cut}"] = {"grid": "cuts", "strategy": strategy, "cut": cut, "defence": {}}
    for strategy in ("csl-u", "dsl-u"):
        for sigma in (0.0, 1.0, 3.0):
            defence = {"gradient-noise": sigma} if sigma else {}
            name = f"{strategy}-s" + (f"-gradient-noise-{sigma:g}" if sigma else "")
            found[name] = {"grid": "u-shaped", "strategy": strategy, "cut": "s", "defence": defence, "attack_first_round": True}
    sweeps = {"activation-noise": (0.1, 0.3, 1.0), "nopeek-weight": (0.1, 0.5, 2.0), "label-dp-epsilon": (1.0, 2.0, 4.0)}
    for strategy in ("csl", "dsl"):
        for key, values in sweeps.items():
            for value in values:
                defence = {key: value} | ({"label-dp": "rr"} if key == "label-dp-epsilon" else {})
                found[f"{strategy}-s-{key}-{value:g}"] = {"grid": "defences", "strategy": strategy, "cut": "s", "defence": defence}
    for entry in found.values():
        if entry["defence"]:
            entry["twin"] = f"{entry['strategy']}-s"
    return found


ENTRIES = entries()


def run_keys(entry: dict[str, Any], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The run config of one entry and seed."""
    return {
        "strategy": entry["strategy"], "model": "resnet20", "cut": entry["cut"], "dataset": args.dataset, "data-dir": args.data_dir,
        "partition": "dirichlet", "dirichlet-alpha": 1.0, "partition-seed": 0, "seed": seed, "num-server-rounds": args.rounds,
        "max-batches": args.max_batches, "local-epochs": 1, "batch-size": 128, "eval-samples": 0, "optimizer": "sgd", "lr": 0.05,
        "momentum": 0.9, "weight-decay": 5e-4, "lr-schedule": "cosine", "keep-rounds": f"1,{args.rounds}",
    } | entry["defence"]


def attacked_rounds(entry: dict[str, Any], rounds: int) -> list[int]:
    return sorted({1, rounds}) if entry.get("attack_first_round") else [rounds]


def leak_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers the tables compare, from one ``leak.json``."""
    white_train = result["reconstruction"]["white-box"]["train"]
    white_test = result["reconstruction"]["white-box"]["test"]
    probe = result["label_inference"]["white-box"]
    found = {
        "test_accuracy": result["test_accuracy"],
        "white_psnr": white_train["psnr"], "white_ssim": white_train["ssim"], "white_mse": white_train["mse"],
        "white_psnr_test": white_test["psnr"], "baseline_psnr": result["reconstruction"]["baseline"]["train"]["psnr"],
        "probe_accuracy": probe["train"]["probe_accuracy"], "centroid_accuracy": probe["train"]["centroid_accuracy"],
        "probe_accuracy_test": probe["test"]["probe_accuracy"], "chance": probe["train"]["chance"],
        "dcor": result["dcor"]["train"],
    }
    if "black-box" in result["reconstruction"]:
        found |= {"black_psnr": result["reconstruction"]["black-box"]["train"]["psnr"],
                  "black_top_accuracy": result["label_inference"]["black-box"]["train"]["top_accuracy"]}
    gradients = result["gradient_label_leakage"]
    if gradients["measured"]:
        found |= {"direction_auc": gradients["direction"]["mean"], "norm_auc_best": gradients["norm"]["best"], "norm_auc_mean": gradients["norm"]["mean"]}
    return found


def attack(run_dir: Path, round_number: int, args: argparse.Namespace) -> dict[str, Any]:
    """``flsplit leak`` on ``round_number`` of a run, kept as ``leak-r<round>.*``; its ``leak.json``."""
    kept = run_dir / f"leak-r{round_number}.json"
    if kept.exists():
        return json.loads(kept.read_text())
    from flsplit.privacy import report  # the optional 'privacy' extra (torchmetrics)

    options = report.LeakOptions(round_number=round_number, aux_size=args.aux_size, target_size=args.target_size,
                                 decoder_epochs=args.decoder_epochs, data_dir=args.data_dir or None)
    print(f"  [{run_dir.name}] flsplit leak, round {round_number}", flush=True)
    result = report.leak(run_dir, options)
    for source, suffix in ((report.LEAK_MD, ".md"), (report.LEAK_GRID, ".png"), (report.LEAK_JSON, ".json")):  # the JSON last: it marks done
        shutil.copyfile(run_dir / source, run_dir / f"leak-r{round_number}{suffix}")
    return result


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std`` (``mean`` alone for one value), of the finite values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")


def summary(results: dict[str, dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """One row per entry with an attacked run: accuracy and every attack's headline, mean ± std over seeds."""
    rows = []
    for name, entry in ENTRIES.items():
        by_seed = {seed: run for seed, run in results.get(name, {}).items() if str(rounds) in run.get("leak", {})}
        if not by_seed:
            continue
        runs = list(by_seed.values())
        last = [run["leak"][str(rounds)] for run in runs]
        row: dict[str, Any] = {
            "entry": name, "grid": entry["grid"], "defence": ", ".join(f"{k} {v}" for k, v in entry["defence"].items()) or "none",
            "seeds": len(runs),
            "final test acc. (%)": spread([run["rounds"][-1]["test_accuracy"] for run in runs], 100),
            "white-box PSNR (dB)": spread([s["white_psnr"] for s in last]),
            "white-box SSIM": spread([s["white_ssim"] for s in last], digits=3),
            "label probe (%)": spread([s["probe_accuracy"] for s in last], 100),
            "centroid (%)": spread([s["centroid_accuracy"] for s in last], 100),
            "dCor(x, z)": spread([s["dcor"] for s in last], digits=3),
            "black-box PSNR (dB)": spread([s.get("black_psnr", math.nan) for s in last]),
        }
        if entry["grid"] == "u-shaped":
            first = [run["leak"]["1"] for run in runs if "1" in run["leak"]]
            row |= {
                "direction AUC, round 1": spread([s.get("direction_auc", math.nan) for s in first], digits=3),
                f"direction AUC, round {rounds}": spread([s.get("direction_auc", math.nan) for s in last], digits=3),
                f"norm AUC (best class), round {rounds}": spread([s.get("norm_auc_best", math.nan) for s in last], digits=3),
            }
        row |= against_twin(results, entry, by_seed, rounds)
        rows.append(row)
    return rows


def against_twin(results: dict[str, dict[str, Any]], entry: dict[str, Any], by_seed: dict[str, dict[str, Any]], rounds: int) -> dict[str, Any]:
    """A defence's cost and effect against its undefended twin (same seeds), and whether it meets the issue's bars."""
    twin_runs = results.get(entry.get("twin", ""), {})
    pairs = [(run, twin_runs[seed]) for seed, run in by_seed.items() if str(rounds) in twin_runs.get(seed, {}).get("leak", {})]
    if not pairs:
        return {}
    cost = statistics.fmean(100 * (twin["rounds"][-1]["test_accuracy"] - run["rounds"][-1]["test_accuracy"]) for run, twin in pairs)
    mse = statistics.fmean(run["leak"][str(rounds)]["white_mse"] / twin["leak"][str(rounds)]["white_mse"] for run, twin in pairs)
    probe = statistics.fmean(run["leak"][str(rounds)]["probe_accuracy"] for run, _ in pairs)
    met = cost <= ACCURACY_BAR and (probe <= PROBE_BAR or mse >= MSE_BAR)
    return {"accuracy cost (points)": round(cost, 1), "MSE × undefended": round(mse, 2), "meets a bar": "yes" if met else "no"}


def plot(rows: list[dict[str, Any]], results: dict[str, dict[str, Any]], rounds: int, path: Path) -> None:
    """Accuracy against leakage, one point per run: reconstruction PSNR, label probe, and (U-shaped) direction AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [("white-box reconstruction PSNR (dB)", "white_psnr", 1), ("white-box label-probe accuracy (%)", "probe_accuracy", 100),
                (f"direction attack's leak AUC on dL/dz2, round {rounds}", "direction_auc", 1)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    markers = {"cuts": "o", "u-shaped": "s", "defences": "^"}
    for index, row in enumerate(rows):
        entry = ENTRIES[row["entry"]]
        for axis, (_, key, scale) in zip(axes, measures):
            for n, run in enumerate(run for run in results[row["entry"]].values() if str(rounds) in run.get("leak", {})):
                found = run["leak"][str(rounds)]
                if key in found:
                    axis.scatter(scale * found[key], 100 * run["rounds"][-1]["test_accuracy"], marker=markers[entry["grid"]],
                                 color=f"C{index % 10}", label=row["entry"] if axis is axes[0] and n == 0 else None)
    for axis, (label, _, _) in zip(axes, measures):
        axis.set_xlabel(label + "  → more leakage")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    axes[1].axvline(100 * PROBE_BAR, color="grey", linestyle=":", linewidth=0.8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(f"CIFAR-10 (JPEG q75), ResNet-20, 2 clients, {rounds} rounds; client 0 attacked at round {rounds}; one point per seed")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict[str, dict[str, Any]], settings: dict[str, Any], output: Path) -> str:
    """JSON (everything), CSV (a line per entry, seed and attacked round), markdown (the summary) and the plot."""
    output.mkdir(parents=True, exist_ok=True)
    rounds = settings["rounds"]
    plan = [(name, str(seed)) for name, entry in ENTRIES.items() if entry["grid"] in settings["grids"] for seed in settings["seeds"]]
    done = [f"{n}/{s}" for n, s in plan if str(rounds) in results.get(n, {}).get(s, {}).get("leak", {})]
    (output / f"{NAME}.json").write_text(json.dumps({"settings": settings, "entries": results}, indent=1))
    with open(output / f"{NAME}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        columns = sorted({k for by_seed in results.values() for run in by_seed.values() for s in run.get("leak", {}).values() for k in s})
        writer.writerow(["entry", "seed", "round", *columns])
        for name, by_seed in results.items():
            for seed, run in by_seed.items():
                for round_number, found in run.get("leak", {}).items():
                    writer.writerow([name, seed, round_number, *(found.get(k) for k in columns)])
    header = (
        "# What leaks, and what stops it (issue 30)\n\n"
        + (f"**PARTIAL**: {len(done)} of {len(plan)} planned runs attacked. The same command continues it.\n\n" if len(done) < len(plan) else "")
        + "CIFAR-10 recompressed as JPEG q75 (lossy), ResNet-20, 2 clients, Dirichlet α = 1; client 0 attacked by an "
        "honest-but-curious server (`docs/privacy.md`: white-box = the client's bottom from its checkpoint, an upper bound; "
        "black-box = a surrogate bottom through the server's top; label probe and centroid on white-box activations; "
        f"PSNR and the probe on the client's own training images). Settings: `{json.dumps(settings)}`.\n\n"
    )
    rows = summary(results, rounds)
    text = header + (markdown_table(rows) if rows else "No run is attacked yet.\n")
    (output / f"{NAME}.md").write_text(text)
    if rows:
        plot(rows, results, rounds, output / f"{NAME}.png")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="", help="where CIFAR-10 is (e.g. a folder holding cifar10-jpeg.tar.gz)")
    parser.add_argument("--dataset", default="cifar10", help="cifar10; synthetic for a smoke run (no data needed)")
    parser.add_argument("--grids", nargs="+", default=["cuts", "u-shaped"], choices=["cuts", "u-shaped", "defences"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-batches", type=int, default=100, help="batches per client per round (0: a full epoch)")
    parser.add_argument("--aux-size", type=int, default=1000, help="flsplit leak: class-balanced auxiliary test images")
    parser.add_argument("--target-size", type=int, default=500, help="flsplit leak: attacked images per set")
    parser.add_argument("--decoder-epochs", type=int, default=20, help="flsplit leak: epochs of the inversion network")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--plot-only", action="store_true", help="rewrite the outputs from the JSON")
    args = parser.parse_args()
    saved_path = args.output / f"{NAME}.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    if args.plot_only:
        print(write_outputs(saved["entries"], saved["settings"], args.output))
        return
    if not args.data_dir and args.dataset != "synthetic":
        parser.error("--data-dir is required (unless --plot-only)")
    protocol = {"dataset": args.dataset, "rounds": args.rounds, "max_batches": args.max_batches, "aux_size": args.aux_size, "target_size": args.target_size,
                "decoder_epochs": args.decoder_epochs}
    same_protocol = {k: saved.get("settings", {}).get(k) for k in protocol} == protocol
    results: dict[str, dict[str, Any]] = saved.get("entries", {}) if same_protocol else {}
    grids = sorted(set(args.grids) | set(saved.get("settings", {}).get("grids", []) if same_protocol else set()))
    seeds = sorted(set(args.seeds) | set(saved.get("settings", {}).get("seeds", []) if same_protocol else set()))
    settings = protocol | {"grids": grids, "seeds": seeds}
    with tempfile.TemporaryDirectory() as home, SuperLink(Path(home), simulation=True) as link:
        for seed in args.seeds:
            for name, entry in ENTRIES.items():
                if entry["grid"] not in args.grids:
                    continue
                run_name = f"{name}-seed{seed}"
                run = results.setdefault(name, {}).setdefault(str(seed), {"leak": {}})
                if all(str(r) in run["leak"] for r in attacked_rounds(entry, args.rounds)):
                    continue  # run and attacked (its folder may be gone)
                print(f"{run_name}: {args.rounds} rounds", flush=True)

                def keep(rounds: list[dict[str, Any]], run: dict[str, Any] = run) -> None:
                    run["rounds"] = [{k: r.get(k) for k in ("round", "test_accuracy", "train_loss", "round_s", "eval_s")} for r in rounds]
                    write_outputs(results, settings, args.output)

                keep(run_method(link, run_name, run_keys(entry, seed, args), 2, args.workdir, keep))
                for round_number in attacked_rounds(entry, args.rounds):
                    run["leak"][str(round_number)] = leak_summary(attack(args.workdir / run_name, round_number, args))
                    write_outputs(results, settings, args.output)
    print(write_outputs(results, settings, args.output))


if __name__ == "__main__":
    main()
