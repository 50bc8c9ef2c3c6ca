"""A finished run as the attacks see it: its config, and both slices as of one round.

The attacks rebuild the network from the run's ``config.json`` (as every party built it) and
load the weights of the chosen round: the client's bottom from
``clients/round-N/partition-K.pt`` (white-box knowledge) and the server's slice from
``server/round-N.pt``, or from ``checkpoint.pt`` when that holds round ``N``: the top of a
label-sharing split, the middle of a U-shaped one. Only the last two rounds survive a run unless
``keep-rounds`` kept others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from flsplit import checkpoint
from flsplit.config import RunConfig, run_config_keys
from flsplit.data import Dataset, PartitionLoader, load_dataset, partition_indices
from flsplit.split import build_halves
from flsplit.wire import load_weights
from strategies import get_strategy, parse_config

SERVER_CHECKPOINT = "checkpoint.pt"  # the server's latest state (apps/server_app.py)


@dataclass
class AttackedRun:
    """The run's config and its bottom and server slices after ``round``, both in eval mode.

    ``top`` is the server's slice: a label-sharing split's top (a classifier of ``z``), a
    U-shaped split's middle (it outputs ``z2``; the client holds the head).
    """

    run_dir: Path
    recorded: dict[str, Any]  # config.json as written: the run config and the run's facts
    config: RunConfig
    round: int
    partition: int
    bottom: nn.Module
    top: nn.Module
    #: The attacked client's counters in its checkpoint of ``round`` (``round_start``: the round's first step).
    counters: dict[str, int]

    @property
    def topology(self) -> str:
        """``label-sharing`` or ``u-shaped``, as the run recorded it."""
        return str(self.recorded.get("topology", "label-sharing"))

    @property
    def num_partitions(self) -> int:
        """How many clients the run had (``num_clients`` in ``config.json``)."""
        return int(self.recorded.get("num_clients", self.config.min_clients))

    def dataset(self) -> Dataset:
        """The run's dataset, read as its clients read it."""
        return load_dataset(self.config.dataset, self.config.data_dir, self.config.seed, self.config.data_options)

    def partition_of(self, data: Dataset) -> np.ndarray:
        """Indices of the attacked client's training images."""
        config = self.config
        return partition_indices(
            data.train.labels, self.partition, self.num_partitions, config.partition, config.dirichlet_alpha, config.classes_per_client, config.data_seed
        )

    def loader(self, data: Dataset) -> PartitionLoader:
        """The attacked client's batches, as it drew them: batch ``step`` is a pure function of the step."""
        return PartitionLoader(data, self.partition_of(data), self.config.batch_size, self.config.seed, self.partition)


def open_run(run_dir: str | Path, round_number: int | None = None, partition: int = 0, data_dir: str | None = None) -> AttackedRun:
    """Load ``run_dir`` at ``round_number`` (default: the last round with both slices on disk).

    ``data_dir`` replaces the recorded ``data-dir`` (a run copied from another machine).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir}: no config.json; name a run folder (<results-dir>/<run-name>)")
    recorded = json.loads(config_path.read_text(encoding="utf-8"))
    config = _run_config(recorded, data_dir)
    rounds = available_rounds(run_dir, partition)
    if not rounds:
        raise FileNotFoundError(
            f"{run_dir}: no round has both a client checkpoint of partition {partition} and the server's state; "
            'run with keep-rounds (e.g. keep-rounds = "1,5,10") to keep the rounds to attack'
        )
    chosen = rounds[-1] if round_number is None else round_number
    if chosen not in rounds:
        raise FileNotFoundError(f"--round {chosen}: {run_dir} keeps rounds {rounds} of partition {partition}; choose one of them")
    bottom = build_halves(config)[0]
    top = get_strategy(config.strategy).server_slice(config)
    client_state = checkpoint.load(checkpoint.client_checkpoint_path(run_dir / "clients", chosen, partition))
    load_weights({"bottom": bottom}, client_state["weights"])
    top.load_state_dict(_server_state(run_dir, chosen)["top"])
    counters = {k: int(v) for k, v in client_state["counters"].items()}
    return AttackedRun(run_dir, recorded, config, chosen, partition, bottom.eval(), top.eval(), counters)


def _run_config(recorded: dict[str, Any], data_dir: str | None) -> RunConfig:
    """The run config ``config.json`` records (its strategy's own keys, such as ``head-cut``, included)."""
    strategy = get_strategy(str(recorded.get("strategy", "")))
    keys = run_config_keys() | (strategy.params.keys() if strategy.params else set())
    raw = {k: v for k, v in recorded.items() if k in keys} | ({"data-dir": data_dir} if data_dir is not None else {})
    return parse_config(raw)


def available_rounds(run_dir: Path, partition: int) -> list[int]:
    """Rounds whose client checkpoint of ``partition`` and server state are both on disk."""
    client_rounds = sorted(
        int(path.parent.name.removeprefix("round-"))
        for path in (run_dir / "clients").glob(f"round-*/partition-{partition}.pt")
    )
    latest = _latest_server_round(run_dir)
    return [n for n in client_rounds if n == latest or checkpoint.kept_server_checkpoint_path(run_dir, n).exists()]


def _latest_server_round(run_dir: Path) -> int | None:
    path = run_dir / SERVER_CHECKPOINT
    return int(checkpoint.load(path)["round"]) if path.exists() else None


def _server_state(run_dir: Path, round_number: int) -> dict[str, Any]:
    kept = checkpoint.kept_server_checkpoint_path(run_dir, round_number)
    return checkpoint.load(kept if kept.exists() else run_dir / SERVER_CHECKPOINT)
