"""The DSL paper's Figs. 4-7, drawn from finished reproduction runs (one PNG per figure and dataset)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from experiments.repro_results import Run

COLORS = {"csl": "tab:blue", "dsl": "tab:orange"}
TIME_LABELS = {"client_fwd_s": "client forward", "client_bwd_s": "client backward", "server_s": "server (top slice)", "comm_s": "communication"}
GB = 1e9


def _pick(runs: list[Run], **fields: object) -> Run | None:
    for run in runs:
        if all(getattr(run, k) == v for k, v in fields.items()):
            return run
    return None


def _axes(rows: int, cols: int, width: float = 4.2, height: float = 3.2, sharey: str | bool = "row") -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharey=sharey)
    return fig, axes


def _title(fig: plt.Figure, title: str) -> None:
    """The figure's title, each line wrapped to the figure's width (one column is narrower)."""
    width = int(fig.get_figwidth() * 11)  # characters of a 12 pt title per inch, about
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()))


def _legend_below(fig: plt.Figure, ax: plt.Axes, title: str, ncol: int) -> None:
    """One legend under the panels, so that it never hides a bar."""
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    _title(fig, title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))


def _bar_positions(groups: int, k: int, strategies: int) -> tuple[np.ndarray, float]:
    """x positions and width of strategy ``k``'s bars, side by side within each of ``groups``."""
    width = 0.8 / strategies
    return np.arange(groups) + (k - (strategies - 1) / 2) * width, width


def _color(strategy: str) -> str:
    return COLORS.get(strategy, "tab:gray")


def fig4_accuracy(runs: list[Run], title: str) -> plt.Figure:
    """Test accuracy per epoch, one panel per (N, cut); DSL's auxiliary head dashed."""
    clients, cuts = _values(runs, "clients"), _values(runs, "cut")
    fig, axes = _axes(len(clients), len(cuts))
    for (i, n), (j, cut) in ((a, b) for a in enumerate(clients) for b in enumerate(cuts)):
        ax = axes[i, j]
        for strategy in _values(runs, "strategy"):
            run = _pick(runs, clients=n, cut=cut, strategy=strategy)
            if run is None:
                continue
            epochs = run.epochs()
            ax.plot(epochs, [100 * m["test_accuracy"] for m in run.metrics], marker="o", ms=3, color=_color(strategy), label=f"{strategy.upper()} (split model)")
            if any(m.get("aux_accuracy") is not None for m in run.metrics):
                aux = [100 * m["aux_accuracy"] if m.get("aux_accuracy") is not None else np.nan for m in run.metrics]
                ax.plot(epochs, aux, ls="--", color=_color(strategy), label=f"{strategy.upper()} auxiliary head")
        ax.set_title(f"N = {n}, cut {cut}")
        ax.set_xlabel("epochs of training data seen")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    _title(fig, f"Fig. 4: test accuracy, CSL vs DSL\n{title}")
    fig.tight_layout()
    return fig


def fig5_communication(runs: list[Run], title: str) -> plt.Figure:
    """Forward and backward bytes per client over the run, stacked, per cut (one panel per N)."""
    clients, cuts, strategies = _values(runs, "clients"), _values(runs, "cut"), _values(runs, "strategy")
    fig, axes = _axes(1, len(clients), height=4.2, sharey=False)
    for j, n in enumerate(clients):
        ax = axes[0, j]
        for k, strategy in enumerate(strategies):
            x, width = _bar_positions(len(cuts), k, len(strategies))
            fwd, bwd = zip(*[
                (run.bytes_per_client() if (run := _pick(runs, clients=n, cut=c, strategy=strategy)) else (0.0, 0.0)) for c in cuts
            ])
            fwd_gb, bwd_gb = np.array(fwd) / GB, np.array(bwd) / GB
            ax.bar(x, fwd_gb, width, color=_color(strategy), label=f"{strategy.upper()} forward (activations + labels)")
            ax.bar(x, bwd_gb, width, bottom=fwd_gb, color=_color(strategy), alpha=0.45, hatch="//", label=f"{strategy.upper()} backward (gradients)")
            for xi, total in zip(x, fwd_gb + bwd_gb):
                ax.annotate(f"{total:.2f}", (xi, total), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(cuts)), [f"cut {c}" for c in cuts])
        ax.set_title(f"N = {n}")
        ax.set_ylabel("training traffic per client (GB)")
        ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, axes[0, 0], f"Fig. 5: training traffic per client over the run (Flower-serialized bytes)\n{title}", ncol=2)
    return fig


def fig6_memory(runs: list[Run], title: str) -> plt.Figure:
    """Measured peak memory per party, per N and cut; markers: autograd's saved bytes."""
    clients, cuts, strategies = _values(runs, "clients"), _values(runs, "cut"), _values(runs, "strategy")
    fig, axes = _axes(2, len(cuts))
    for i, party in enumerate(("client", "server")):
        for j, cut in enumerate(cuts):
            ax = axes[i, j]
            for k, strategy in enumerate(strategies):
                x, width = _bar_positions(len(clients), k, len(strategies))
                found = [_pick(runs, clients=n, cut=cut, strategy=strategy) for n in clients]
                peaks = [(r.peak_mb(party) or np.nan) if r else np.nan for r in found]
                saved = [(r.saved_mb(party) or np.nan) if r else np.nan for r in found]
                ax.bar(x, peaks, width, color=_color(strategy), label=f"{strategy.upper()} peak")
                ax.scatter(x, saved, marker="_", s=200, color="black", zorder=3, label="autograd saved tensors (cross-check)" if k == 0 else None)
            ax.set_xticks(np.arange(len(clients)), [f"N = {n}" for n in clients])
            ax.set_title(f"{party}, cut {cut}")
            ax.set_ylabel(f"{party} peak memory (MiB)")
            ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    _title(fig, f"Fig. 6: peak training memory per party (allocator high-water mark, see docs/outputs.md)\n{title}")
    fig.tight_layout()
    return fig


def fig7_time(runs: list[Run], title: str) -> plt.Figure:
    """Per-epoch time split into client forward, client backward, server and communication."""
    clients, cuts, strategies = _values(runs, "clients"), _values(runs, "cut"), _values(runs, "strategy")
    fig, axes = _axes(1, len(clients), height=4.8)
    hatches = {"client_fwd_s": "", "client_bwd_s": "..", "server_s": "//", "comm_s": "xx"}
    for j, n in enumerate(clients):
        ax = axes[0, j]
        for k, strategy in enumerate(strategies):
            x, width = _bar_positions(len(cuts), k, len(strategies))
            found = [_pick(runs, clients=n, cut=c, strategy=strategy) for c in cuts]
            parts = [r.seconds_per_epoch() if r else None for r in found]
            bottom = np.zeros(len(cuts))
            for key, label in TIME_LABELS.items():
                values = np.array([p[key] if p else np.nan for p in parts])
                ax.bar(x, values, width, bottom=bottom, color=_color(strategy), alpha=0.35 + 0.65 * (key == "client_fwd_s"), hatch=hatches[key], edgecolor="black", lw=0.3, label=f"{strategy.upper()} {label}")
                bottom = bottom + np.nan_to_num(values)
            wall = [p["round_s"] if p else np.nan for p in parts]
            ax.scatter(x, wall, marker="D", color="black", zorder=3, label="wall clock" if k == 0 else None)
        ax.set_xticks(np.arange(len(cuts)), [f"cut {c}" for c in cuts])
        ax.set_title(f"N = {n}")
        ax.set_ylabel("seconds per epoch")
        ax.grid(axis="y", alpha=0.3)
    _legend_below(
        fig, axes[0, 0],
        f"Fig. 7: per-epoch time; bars: compute and communication summed over parties (they overlap in time), diamond: wall clock\n{title}",
        ncol=5,
    )
    return fig


FIGURES = {"fig4_accuracy": fig4_accuracy, "fig5_communication": fig5_communication, "fig6_memory": fig6_memory, "fig7_time": fig7_time}


def write_figures(runs: list[Run], out: Path, title: str) -> list[Path]:
    """Draw every figure for every dataset in ``runs``; return the PNG paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset in _values(runs, "dataset"):
        subset = [r for r in runs if r.dataset == dataset]
        for name, draw in FIGURES.items():
            fig = draw(subset, f"{dataset}, {title}")
            path = out / f"{name}_{dataset}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths


def _values(runs: list[Run], field: str) -> list:
    order = {"cut": ["s", "m", "d"], "strategy": ["csl", "dsl"]}.get(field, [])
    found = {getattr(r, field) for r in runs}
    return sorted(found, key=lambda v: (order.index(v) if v in order else len(order), v))
