"""The DSL paper's four claims beside what the reproduction runs measured (JSON and markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.repro_results import Run
from experiments.tables import markdown_table

PAPER = {
    "accuracy_gap_pts": "on a par with CSL (Fig. 4)",
    "comm_ratio": "about 0.5: no gradients come back (Fig. 5)",
    "client_memory_ratio": "down to 0.42 (58% lower) at cut s (Fig. 6)",
    "server_memory_ratio": "down to 0.42 (58% lower) at cut s (Fig. 6)",
    "derived_one_device_memory_ratio": "(derived from the party peaks, not measured) both parties on one device",
    "time_ratio": "moderately above 1, most at cut s (Fig. 7)",
}


def compare(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (dataset, N, cut) that has both a CSL and a DSL run: DSL relative to CSL."""
    rows = []
    for (dataset, clients, cut), csl, dsl in _pairs(runs):
        csl_bytes, dsl_bytes = sum(csl.bytes_per_client()), sum(dsl.bytes_per_client())
        rows.append(
            {
                "dataset": dataset,
                "N": clients,
                "cut": cut,
                "csl_accuracy": csl.final("test_accuracy"),
                "dsl_accuracy": dsl.final("test_accuracy"),
                "dsl_aux_accuracy": dsl.final("aux_accuracy"),
                "accuracy_gap_pts": 100 * (dsl.final("test_accuracy") - csl.final("test_accuracy")),
                "csl_gb_per_client": csl_bytes / 1e9,
                "dsl_gb_per_client": dsl_bytes / 1e9,
                "comm_ratio": dsl_bytes / csl_bytes,
                "csl_client_peak_mb": csl.peak_mb("client"),
                "dsl_client_peak_mb": dsl.peak_mb("client"),
                "client_memory_ratio": _ratio(dsl.peak_mb("client"), csl.peak_mb("client")),
                "csl_server_peak_mb": csl.peak_mb("server"),
                "dsl_server_peak_mb": dsl.peak_mb("server"),
                "server_memory_ratio": _ratio(dsl.peak_mb("server"), csl.peak_mb("server")),
                "derived_one_device_memory_ratio": _one_device_ratio(csl, dsl),
                "csl_s_per_epoch": csl.seconds_per_epoch()["round_s"],
                "dsl_s_per_epoch": dsl.seconds_per_epoch()["round_s"],
                "time_ratio": dsl.seconds_per_epoch()["round_s"] / csl.seconds_per_epoch()["round_s"],
            }
        )
    return rows


def _pairs(runs: list[Run]) -> list[tuple[tuple[str, int, str], Run, Run]]:
    """``((dataset, N, cut), csl, dsl)`` for every setting that has both runs, in grid order."""
    keys = sorted({(r.dataset, r.clients, r.cut) for r in runs}, key=lambda k: (k[0], k[1], "smd".find(k[2]), k[2]))
    pairs = []
    for key in keys:
        pair = {r.strategy: r for r in runs if (r.dataset, r.clients, r.cut) == key}
        if {"csl", "dsl"} <= set(pair):
            pairs.append((key, pair["csl"], pair["dsl"]))
    return pairs


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim: the paper's statement and our mean and range over the grid (and at cut s)."""
    out = []
    for key, paper in PAPER.items():
        values = [r[key] for r in rows if r[key] is not None]
        shallow = [r[key] for r in rows if r["cut"] == "s" and r[key] is not None]
        if not values:
            continue
        out.append(
            {
                "claim": key,
                "paper": paper,
                "measured_mean": sum(values) / len(values),
                "measured_min": min(values),
                "measured_max": max(values),
                "mean_at_cut_s": sum(shallow) / len(shallow) if shallow else None,
            }
        )
    return out


def gap_per_epoch(runs: list[Run], preset: str) -> list[dict[str, Any]]:
    """DSL - CSL test accuracy after every round of every (dataset, N, cut) pair, and how far
    DSL's server (the test accuracy) sits from DSL's own auxiliary head (positive: above it)."""
    rows = []
    for (dataset, clients, cut), csl, dsl in _pairs(runs):
        for epoch, c, d in zip(dsl.epochs(), csl.metrics, dsl.metrics, strict=False):
            aux = d.get("aux_accuracy")
            rows.append(
                {
                    "preset": preset,
                    "dataset": dataset,
                    "N": clients,
                    "cut": cut,
                    "epoch": round(epoch, 2),
                    "csl_accuracy": c["test_accuracy"],
                    "dsl_accuracy": d["test_accuracy"],
                    "gap_pts": 100 * (d["test_accuracy"] - c["test_accuracy"]),
                    "dsl_aux_accuracy": aux,
                    "server_minus_aux_pts": None if aux is None else 100 * (d["test_accuracy"] - aux),
                }
            )
    return rows


def write_claims(runs: list[Run], out: Path, beside: dict[str, list[Run]] | None = None, status: str = "") -> str:
    """Write ``claims.json`` and ``claims.md`` under ``out``; return the markdown.

    ``beside`` maps another preset's name to its runs: its per-epoch gaps for the same
    (dataset, N, cut) settings are listed under this preset's, so two scales read side by side.
    ``status`` (the grid's ``COMPLETE``/``PARTIAL`` line) heads both files, so a partial grid
    is never read as a finished one.
    """
    rows = compare(runs)
    if not rows:
        return "no (CSL, DSL) pairs to compare yet\n"
    summary = summarize(rows)
    per_epoch = gap_per_epoch(runs, out.name.removeprefix("reproduce-"))
    settings = {(r["dataset"], r["N"], r["cut"]) for r in per_epoch}
    for name, other in (beside or {}).items():
        per_epoch += [r for r in gap_per_epoch(other, name) if (r["dataset"], r["N"], r["cut"]) in settings]
    (out / "claims.json").write_text(json.dumps({"status": status, "summary": summary, "pairs": rows, "per_epoch": per_epoch}, indent=2))
    text = (f"{status}\n\n" if status else "") + "## The paper's claims against our runs\n\n" + markdown_table(summary)
    text += "\n## DSL against CSL, per setting\n\n" + markdown_table(rows)
    text += (
        "\n## DSL - CSL after every round (epochs of data seen), and DSL's server against its own auxiliary head\n\n"
        + markdown_table(per_epoch)
    )
    (out / "claims.md").write_text(text)
    return text


def _one_device_ratio(csl: Run, dsl: Run) -> float | None:
    """Both parties in one process, as in a one-GPU simulation: CSL's client graph is still alive
    while the server trains (peaks add up); DSL's client has freed its graph (the larger peak)."""
    peaks = [run.peak_mb(party) for run in (csl, dsl) for party in ("client", "server")]
    if any(p is None for p in peaks):
        return None
    csl_client, csl_server, dsl_client, dsl_server = peaks
    return max(dsl_client, dsl_server) / (csl_client + csl_server)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None
