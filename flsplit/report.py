"""Comparison report of finished runs: accuracy plots and a markdown table from results folders.

A run folder is what the ServerApp writes to ``<results-dir>/<run-name>/``: ``config.json`` and
``metrics.jsonl`` (see ``flsplit/results.py``). The report reads nothing else, so it works on
runs copied from another machine as well as on a live ``results/`` folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from flsplit.coverage import covers_fewer_clients
from flsplit.markdown import markdown_table
from flsplit.results import read_metrics

PLOT = "comparison.png"
TABLE = "comparison.md"


@dataclass(frozen=True)
class Run:
    """One finished (or partly finished) run: its name, config and per-round metrics."""

    name: str
    config: dict[str, Any]
    rounds: list[dict[str, Any]]

    @property
    def strategy(self) -> str:
        """The run's strategy, from ``config.json`` (or its metrics if the config lacks it)."""
        return str(self.config.get("strategy") or self.rounds[0].get("strategy", "?"))

    @property
    def round_numbers(self) -> list[int]:
        """The rounds, as numbered in ``metrics.jsonl``."""
        return [int(m["round"]) for m in self.rounds]

    @property
    def test_accuracy(self) -> list[float | None]:
        """Test accuracy after every round, as a fraction; ``None`` where ``eval-every`` skipped it."""
        return [None if m["test_accuracy"] is None else float(m["test_accuracy"]) for m in self.rounds]

    @property
    def scored_accuracy(self) -> list[float]:
        """The test accuracies of the rounds that were scored, in round order."""
        return [a for a in self.test_accuracy if a is not None]

    @property
    def partial_rounds(self) -> list[int]:
        """Rounds whose test accuracy covers fewer clients than the federation (``flsplit.coverage``)."""
        return [int(m["round"]) for m in self.rounds if covers_fewer_clients(m)]

    @property
    def cumulative_gb(self) -> list[float]:
        """Training traffic (``bytes_up + bytes_down``) summed over the rounds so far, in GB."""
        return list(accumulate((m["bytes_up"] + m["bytes_down"]) / 1e9 for m in self.rounds))

    @property
    def cumulative_s(self) -> list[float]:
        """Wall clock of training and evaluation (``round_s + eval_s``) summed so far, in seconds."""
        return list(accumulate(m["round_s"] + m["eval_s"] for m in self.rounds))


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run's ``metrics.jsonl``."""
    return (path / "metrics.jsonl").is_file()


def load_run(path: Path) -> Run:
    """Read one run folder; a missing ``config.json`` leaves the config empty."""
    config_path = path / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return Run(path.name, config, read_metrics(path / "metrics.jsonl"))


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run in ``paths``: each path is a run folder, or a folder of run folders.

    Runs with no finished round are left out.

    Raises
    ------
    FileNotFoundError
        If a path does not exist or no path holds a run with at least one round.
    """
    runs = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder")
        folders = [path] if is_run_dir(path) else sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
        runs += [run for run in map(load_run, folders) if run.rounds]
    if not runs:
        raise FileNotFoundError(
            f"no run folders (with config.json and metrics.jsonl) in {', '.join(map(str, paths))}"
        )
    return runs


def summary(run: Run) -> dict[str, Any]:
    """One table row: rounds, final and best test accuracy (%), total GB and wall clock (s)."""
    return {
        "run": run.name,
        "strategy": run.strategy,
        "rounds": len(run.rounds),
        "final test acc. (%)": round(100 * run.scored_accuracy[-1], 2),
        "best test acc. (%)": round(100 * max(run.scored_accuracy), 2),
        "total comm. (GB)": round(run.cumulative_gb[-1], 4),
        "wall clock (s)": round(run.cumulative_s[-1], 1),
        "rounds scored on fewer clients": ", ".join(map(str, run.partial_rounds)) or None,
    }


def plot(runs: list[Run], path: Path) -> None:
    """Test accuracy against rounds, cumulative communication and wall clock; one line per run."""
    figure = Figure(figsize=(15, 4.6), layout="constrained")
    axes = figure.subplots(1, 3, sharey=True)
    panels = [
        ("round", lambda run: run.round_numbers, "linear"),
        ("cumulative training communication, up + down (GB, log scale)", lambda run: run.cumulative_gb, "log"),
        ("cumulative wall clock, training + evaluation (min)", _minutes, "linear"),
    ]
    for ax, (label, xs, scale) in zip(axes, panels):
        for run in runs:
            scored = [(x, 100 * a) for x, a in zip(xs(run), run.test_accuracy) if a is not None]
            (line,) = ax.plot(*zip(*scored), marker="o", label=f"{run.name} ({run.strategy})")
            partial = [(x, 100 * a) for x, a, m in zip(xs(run), run.test_accuracy, run.rounds) if a is not None and covers_fewer_clients(m)]
            if partial:  # hollow: scored on part of the federation only
                ax.plot(*zip(*partial), linestyle="none", marker="o", markersize=11, markerfacecolor="none", color=line.get_color())
        ax.set_xscale(scale)
        if scale == "log":  # plain numbers (0.5, 1, 2, 5) instead of powers of ten
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("test accuracy (%)")
    figure.suptitle("Test accuracy after each round")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(runs), 4))
    figure.savefig(path, dpi=110)


def table(runs: list[Run]) -> str:
    """The runs' summaries as a markdown table."""
    return markdown_table([summary(run) for run in runs])


def _minutes(run: Run) -> list[float]:
    return [t / 60 for t in run.cumulative_s]


def write_report(runs: list[Run], output: str | Path) -> tuple[Path, Path]:
    """Write ``comparison.png`` and ``comparison.md`` to ``output``; return their paths."""
    folder = Path(output).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    plot(runs, folder / PLOT)
    markdown = folder / TABLE
    markdown.write_text(
        "# Run comparison\n\n"
        + table(runs)
        + "\nTotal comm. is training traffic (bytes_up + bytes_down); wall clock is Σ round_s + eval_s.\n"
        + "Rounds scored on fewer clients: their test accuracy covers only the slices of the clients still "
        + "answering (`evaluated_clients`), so it is not comparable with a round over every client; the plot "
        + "rings them.\n"
        + f"\n![test accuracy]({PLOT})\n",
        encoding="utf-8",
    )
    return folder / PLOT, markdown
