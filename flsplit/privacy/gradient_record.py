"""What a U-shaped server keeps of the ``dL/dz2`` it receives, for the label-leakage attacks.

In a U-shaped split every client returns ``dL/dz2`` for each batch; those gradients are all the
norm and direction attacks (``gradient_leakage``) need. The server records them as it receives
them, so the attack sees exactly what an honest-but-curious server holds, and only at the rounds
``keep-rounds`` keeps, the first ``record-gradient-batches`` batches of each client there (the
bound on the files' size). At the round's end each client's rows go to
``<run>/gradients/round-<r>-client-<p>.pt``, written atomically.

The server knows no label. Beside the gradients it writes what the attack's *evaluation* needs
to find the true labels later: the client's partition, and for every row the position of its
batch in the round (the order the server received it) and its row within that batch. The
client's checkpoint of the round knows the round's first step, so ``flsplit leak`` rebuilds each
row's batch from the run's data (``flsplit.data.PartitionLoader``, a pure function of the step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flsplit import checkpoint
from flsplit.config import RunConfig

GRADIENTS_DIR = "gradients"


def gradient_record_path(run_dir: str | Path, round_number: int, partition: int) -> Path:
    """Where the server keeps the ``dL/dz2`` of ``partition`` received in ``round_number``."""
    return Path(run_dir) / GRADIENTS_DIR / f"round-{round_number}-client-{partition}.pt"


class GradientRecorder:
    """Holds the first ``batches`` gradients of each client in a kept round; writes them at its end."""

    def __init__(self, run_dir: str | Path, config: RunConfig, partitions: dict[int, int], batches: int) -> None:
        self.run_dir, self.config, self.batches = Path(run_dir), config, batches
        #: client index (as the server halves know clients) -> partition id (as the data knows them)
        self.partitions = dict(partitions)
        self._round: int | None = None
        self._received: dict[int, int] = {}  # per client: gradients received this round
        self._kept: dict[int, list[tuple[int, torch.Tensor]]] = {}  # per client: (batch position, dL/dz2)

    def begin_round(self, round_number: int) -> None:
        """Record in this round only if ``keep-rounds`` keeps it."""
        self._round = round_number if self.batches > 0 and self.config.keeps_round(round_number) else None
        self._received.clear()
        self._kept.clear()

    def received(self, client_id: int, gradient: torch.Tensor) -> None:
        """Note one batch's ``dL/dz2`` from ``client_id``, kept if the round and the bound allow."""
        if self._round is None:
            return
        position = self._received.get(client_id, 0)
        self._received[client_id] = position + 1
        if position < self.batches:
            self._kept.setdefault(client_id, []).append((position, gradient.detach().float().cpu().clone()))

    def end_round(self) -> list[Path]:
        """Write each client's recorded rows of this round; returns the files written."""
        if self._round is None:
            return []
        written = []
        for client_id, kept in sorted(self._kept.items()):
            path = gradient_record_path(self.run_dir, self._round, self.partitions[client_id])
            checkpoint.save_atomic(self._payload(client_id, kept), path)
            written.append(path)
        self._kept.clear()
        return written

    def _payload(self, client_id: int, kept: list[tuple[int, torch.Tensor]]) -> dict[str, Any]:
        gradients = torch.cat([g for _, g in kept])
        return {
            "round": self._round,
            "partition": self.partitions[client_id],
            "gradients": gradients,
            # per row: its batch's position in the round (0: the round's first) and its row there
            "round_batch": torch.cat([torch.full((len(g),), p, dtype=torch.long) for p, g in kept]),
            "row": torch.cat([torch.arange(len(g)) for _, g in kept]),
        }
