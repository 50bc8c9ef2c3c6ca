"""Reproduce the DSL paper's Figs. 4-7 through the real Flower app in the simulation engine.

Every (dataset, N, cut, strategy) of a preset's grid is one ``flwr run`` on a local simulation
SuperLink. A finished run's ``config.json`` and ``metrics.jsonl`` are copied to
``experiments/results/reproduce-<preset>/runs/<run>/``; a run that is already there is
skipped, so an interrupted grid continues where it stopped. The figures and the claims
table are then made from those files alone.

    python -m experiments.reproduce --preset cpu --data-dir ../shared/data   # run, then plot
    python -m experiments.reproduce --preset cpu --plot-only                 # plot only
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.repro_claims import write_claims
from experiments.repro_figures import write_figures
from experiments.repro_results import load_runs, run_is_complete
from experiments.tables import RESULTS
from flsplit.launcher import SuperLink, run_config_text
from flsplit.results import read_metrics

PRESETS = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class GridPoint:
    """One run of the grid."""

    dataset: str
    clients: int
    cut: str
    strategy: str

    @property
    def name(self) -> str:
        return f"{self.dataset}-n{self.clients}-cut{self.cut}-{self.strategy}"


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset TOML (a name in ``experiments/presets`` or a path) with ``[grid]`` and ``[run-config]``."""
    path = Path(name_or_path) if name_or_path.endswith(".toml") else PRESETS / f"{name_or_path}.toml"
    if not path.exists():
        raise SystemExit(f"--preset: no preset at {path}; choose one of {sorted(p.stem for p in PRESETS.glob('*.toml'))}")
    preset = tomllib.loads(path.read_text(encoding="utf-8"))
    missing = {"grid", "run-config"} - set(preset)
    if missing:
        raise SystemExit(f"--preset: {path} lacks the table(s) {sorted(missing)}")
    preset["name"] = path.stem
    return preset


def with_overrides(preset: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``preset`` with ``KEY=VALUE`` run-config overrides, renamed after them (``cpu-long-seed1``)."""
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: '{assignment}' is not KEY=VALUE")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare word: a string
        preset = preset | {"run-config": preset["run-config"] | {key: parsed}, "name": f"{preset['name']}-{key}{value}"}
    return preset


def grid_points(grid: dict[str, Any]) -> list[GridPoint]:
    """The runs in order; CSL and DSL of one setting run back to back, so they share conditions."""
    return [
        GridPoint(dataset, clients, cut, strategy)
        for dataset, clients, cut, strategy in itertools.product(grid["datasets"], grid["clients"], grid["cuts"], grid["strategies"])
    ]


def grid_status(preset: dict[str, Any], out: Path, scratch: Path) -> str:
    """``COMPLETE.`` or ``PARTIAL: ...`` naming every unfinished run and how far its scratch run got."""
    rounds = preset["run-config"]["num-server-rounds"]
    points = grid_points(preset["grid"])
    missing = []
    for point in points:
        if run_is_complete(out / "runs" / point.name, rounds):
            continue
        metrics = scratch / point.name / "metrics.jsonl"
        done = len(read_metrics(metrics)) if metrics.exists() else 0
        missing.append(f"{point.name} ({done} of {rounds} rounds)")
    if not missing:
        return f"COMPLETE: all {len(points)} runs."
    return f"PARTIAL: {len(points) - len(missing)} of {len(points)} runs finished; not finished: {', '.join(missing)}."


def run_config(preset: dict[str, Any], point: GridPoint, data_dir: str, results_dir: Path) -> dict[str, Any]:
    """The run config of one grid point: the preset's keys plus the point's."""
    config = dict(preset["run-config"]) | {
        "strategy": point.strategy,
        "cut": point.cut,
        "dataset": point.dataset,
        "data-dir": data_dir,
        "results-dir": str(results_dir),
        "run-name": point.name,
    }
    per_round = preset["grid"].get("samples-per-round")
    if per_round:
        config["max-batches"] = max(1, round(per_round / point.clients / config.get("batch-size", 128)))
    return config


def _run(link: SuperLink, config: dict[str, Any], clients: int, timeout_s: float) -> tuple[int, str]:
    """``flwr run`` one grid point, echoing the app's per-round lines; return (code, output tail)."""
    process = link.launch(run_config_text(config), num_supernodes=clients)
    tail: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    for line in process.stdout:
        tail = (tail + [line])[-60:]
        if re.search(r"round \d+/\d+:|flsplit:|ERROR", line):
            print("    " + line.strip()[-160:], flush=True)
        if time.monotonic() > deadline:
            process.kill()
            break
    process.wait()
    return process.returncode, "".join(tail)


def run_grid(preset: dict[str, Any], data_dir: str, out: Path, scratch: Path, timeout_s: float) -> list[str]:
    """Run every grid point that has no results yet; return the names of runs that failed."""
    points = grid_points(preset["grid"])
    todo = [p for p in points if not run_is_complete(out / "runs" / p.name, preset["run-config"]["num-server-rounds"])]
    print(f"reproduce {preset['name']}: {len(points)} runs, {len(points) - len(todo)} already done, {len(todo)} to run", flush=True)
    failed: list[str] = []
    durations: list[float] = []
    started = time.monotonic()
    # Ray starts its workers (the clients) at nice 15 under the ServerApp's 0; equal priority is
    # what separate devices have, and keeps other work on the machine from slowing only clients.
    with tempfile.TemporaryDirectory() as home, SuperLink(Path(home) / "flwr-home", env={"RAY_worker_niceness": "0"}) as link:
        for i, point in enumerate(todo, 1):
            eta = f"{(sum(durations) / len(durations)) * (len(todo) - i + 1) / 60:.0f} min" if durations else "unknown"
            print(
                f"[{i}/{len(todo)}] {point.name}: elapsed {(time.monotonic() - started) / 60:.1f} min, "
                f"about {eta} left",
                flush=True,
            )
            config = run_config(preset, point, data_dir, scratch)
            # An interrupted run continues from its last checkpoint (at most one round lost).
            config["resume"] = (scratch / point.name / "checkpoint.pt").exists()
            if not config["resume"]:
                shutil.rmtree(scratch / point.name, ignore_errors=True)
            run_started = time.monotonic()
            code, tail = _run(link, config, point.clients, timeout_s)
            durations.append(time.monotonic() - run_started)
            produced = scratch / point.name
            if code != 0 or not run_is_complete(produced, config["num-server-rounds"]):
                print(f"    FAILED (exit {code}):\n{tail}", file=sys.stderr, flush=True)
                failed.append(point.name)
                continue
            target = out / "runs" / point.name
            target.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "metrics.jsonl"):
                shutil.copy2(produced / name, target / name)
            print(f"    done in {durations[-1] / 60:.1f} min", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="a name in experiments/presets (cpu, paper) or a .toml path")
    parser.add_argument("--data-dir", default="", help="where the datasets are (see docs/outputs.md, Data)")
    parser.add_argument("--plot-only", action="store_true", help="make the figures and claims from existing results")
    parser.add_argument("--out", default="", help="results folder (default experiments/results/reproduce-<preset>)")
    parser.add_argument("--scratch", default="results/reproduce", help="where runs write checkpoints and logs (not committed)")
    parser.add_argument("--timeout-min", type=float, default=60.0, help="per run")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a run-config key of the preset (TOML value, e.g. seed=1 or lr=0.003); the results go to "
        "reproduce-<preset>-<KEY><VALUE>... so each variant (a seed, an lr of a sweep) keeps its own folder",
    )
    args = parser.parse_args()
    preset = with_overrides(load_preset(args.preset), args.set)
    out = Path(args.out) if args.out else RESULTS / f"reproduce-{preset['name']}"
    scratch = Path(args.scratch).resolve() / preset["name"]
    failed: list[str] = []
    if not args.plot_only:
        data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else ""
        failed = run_grid(preset, data_dir, out, scratch, args.timeout_min * 60)
    runs = load_runs(out / "runs")
    if not runs:
        raise SystemExit(f"no finished runs under {out / 'runs'}; run without --plot-only first")
    title = _title(preset, runs)
    for path in write_figures(runs, out, title):
        print(f"wrote {path}")
    beside = {name: load_runs(RESULTS / f"reproduce-{name}" / "runs") for name in preset.get("report", {}).get("beside", [])}
    print(write_claims(runs, out, beside, status=grid_status(preset, out, scratch)))
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {', '.join(failed)}; run the same command again to retry them")


def _title(preset: dict[str, Any], runs: list) -> str:
    config = runs[0].config
    return (
        f"preset '{preset['name']}': {config['model']}, {config['aux-head']} aux head, lr {config['lr']}, "
        f"batch {config['batch-size']}, {config['num-server-rounds']} rounds"
    )


if __name__ == "__main__":
    main()
