"""Atomic checkpoint files: a crash mid-write leaves the previous checkpoint intact."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def client_checkpoint_path(clients_dir: str | Path, round_number: int, partition_id: int) -> Path:
    """Where a client keeps its slice as of ``round_number``: ``<clients_dir>/round-N/partition-K.pt``."""
    return Path(clients_dir) / f"round-{round_number}" / f"partition-{partition_id}.pt"


def kept_server_checkpoint_path(run_dir: str | Path, round_number: int) -> Path:
    """Where ``keep-rounds`` keeps the server's state after ``round_number`` (``checkpoint.pt`` is overwritten)."""
    return Path(run_dir) / "server" / f"round-{round_number}.pt"


def save_atomic(payload: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep_copy(source: str | Path, destination: str | Path) -> None:
    """Copy a checkpoint to where it is kept, atomically (a reader never sees half of it)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, destination)


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic``, its tensors onto ``device``.

    Whatever device wrote it (``map_location``), so a run moves between GPU and CPU machines.
    """
    return torch.load(path, map_location=device, weights_only=False)


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch generator states of this process."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["torch"].cpu())  # a CPU generator's state, wherever it was loaded
