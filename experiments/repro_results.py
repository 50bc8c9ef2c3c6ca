"""Finished reproduction runs, read back from ``config.json`` and ``metrics.jsonl``, and the
quantities the figures and claims compare (all derived from what the runs recorded)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsplit.results import read_metrics

TRAIN_SET_SIZE = 50_000  # CIFAR-10 and CIFAR-100 alike
TIME_PARTS = ("client_fwd_s", "client_bwd_s", "server_s", "comm_s")


@dataclass
class Run:
    """One finished run of the grid."""

    config: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def strategy(self) -> str:
        return str(self.config["strategy"])

    @property
    def cut(self) -> str:
        return str(self.config["cut"])

    @property
    def clients(self) -> int:
        return int(self.config["num_clients"])

    @property
    def dataset(self) -> str:
        return str(self.config["dataset"])

    def epochs(self) -> list[float]:
        """Epochs of training data seen at the end of each round."""
        seen, out = 0, []
        for m in self.metrics:
            seen += m["train_samples"]
            out.append(seen / TRAIN_SET_SIZE)
        return out

    def final(self, key: str) -> float:
        """``key`` in the last round."""
        return float(self.metrics[-1][key])

    def bytes_per_client(self) -> tuple[float, float]:
        """Training bytes (forward = uploads, backward = downloads) per client over the run."""
        up = sum(m["bytes_up"] for m in self.metrics)
        down = sum(m["bytes_down"] for m in self.metrics)
        return up / self.clients, down / self.clients

    def peak_mb(self, party: str) -> float | None:
        """Highest probed peak memory of ``party`` (``client`` or ``server``), MiB."""
        values = [m[f"{party}_peak_mb"] for m in self.metrics if m.get(f"{party}_peak_mb") is not None]
        return max(values) if values else None

    def saved_mb(self, party: str) -> float | None:
        """Bytes autograd saved for backward in the probed window with the highest peak, MiB."""
        rows = [m for m in self.metrics if m.get(f"{party}_peak_mb") is not None]
        return max(rows, key=lambda m: m[f"{party}_peak_mb"])[f"{party}_saved_mb"] if rows else None

    def seconds_per_epoch(self) -> dict[str, float]:
        """Per-epoch seconds of each time part and of the wall clock (``round_s``).

        Taken from the fastest round after the first (round 1 also decodes the data and runs
        the memory probe): other work on the machine can only slow a round down, so the
        fastest one is the closest to the run's own cost, as with the minimum of repeats.
        """
        rounds = self.metrics[1:] if len(self.metrics) > 1 else self.metrics
        fastest = min(rounds, key=lambda m: m["round_s"] / m["train_samples"])
        scale = TRAIN_SET_SIZE / fastest["train_samples"]
        return {key: fastest[key] * scale for key in (*TIME_PARTS, "round_s")}


def run_is_complete(folder: Path, rounds: int) -> bool:
    """True if ``folder`` holds a run's config and all ``rounds`` rounds of metrics."""
    metrics = folder / "metrics.jsonl"
    if not (folder / "config.json").exists() or not metrics.exists():
        return False
    return len(read_metrics(metrics)) >= rounds


def load_runs(folder: Path) -> list[Run]:
    """Every run under ``folder`` (one sub-folder each), in name order."""
    runs = []
    for run_dir in sorted(p for p in folder.glob("*") if (p / "metrics.jsonl").exists()):
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        runs.append(Run(config, read_metrics(run_dir / "metrics.jsonl")))
    return runs
