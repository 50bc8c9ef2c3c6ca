"""Split a training set across clients with flwr-datasets partitioners, in memory.

A Dirichlet split of CIFAR's 50,000 labels takes seconds, and in deployment every message is
a new process, so computed partitions are cached on disk next to the decoded arrays.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from flsplit.data.cache import atomic_save, cache_dir, load_entry

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner


def make_partitioner(
    scheme: str, num_partitions: int, alpha: float, classes_per_client: int, seed: int
) -> Partitioner:
    """The flwr-datasets partitioner for ``iid``, ``dirichlet`` or ``pathological``."""
    # Imported here: flwr-datasets pulls in HF datasets and pyarrow (seconds of start-up), and a
    # deployed ClientApp, a new process per message, needs them only before the cache is warm.
    from flwr_datasets.partitioner import (  # noqa: PLC0415
        DirichletPartitioner,
        IidPartitioner,
        PathologicalPartitioner,
    )

    if scheme == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if scheme == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_partitions, partition_by="label", alpha=alpha, seed=seed
        )
    if scheme == "pathological":
        return PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            seed=seed,
        )
    raise ValueError(f"partition: unknown scheme '{scheme}'; choose iid, dirichlet or pathological")


def partition_indices(
    labels: np.ndarray,
    partition_id: int,
    num_partitions: int,
    scheme: str = "iid",
    alpha: float = 1.0,
    classes_per_client: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """Indices into ``labels`` that make up partition ``partition_id`` of ``num_partitions``."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id: {partition_id} is outside 0..{num_partitions - 1}")
    key = hashlib.sha256(labels.tobytes())
    key.update(repr((partition_id, num_partitions, scheme, alpha, classes_per_client, seed)).encode())
    path = cache_dir() / "partitions" / f"{key.hexdigest()[:24]}.npy"
    cached = load_entry([path])
    if cached is not None:
        return cached[0]
    indices = _compute(labels, partition_id, num_partitions, scheme, alpha, classes_per_client, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(path, indices)
    return indices


def _compute(
    labels: np.ndarray,
    partition_id: int,
    num_partitions: int,
    scheme: str,
    alpha: float,
    classes_per_client: int,
    seed: int,
) -> np.ndarray:
    from datasets import Dataset as HFDataset  # noqa: PLC0415 - see make_partitioner

    partitioner = make_partitioner(scheme, num_partitions, alpha, classes_per_client, seed)
    # IidPartitioner takes contiguous shards, and files are often sorted by class: shuffle first.
    order = np.random.default_rng(seed).permutation(len(labels))
    partitioner.dataset = HFDataset.from_dict(
        {"label": labels[order].tolist(), "index": order.tolist()}
    )
    part = partitioner.load_partition(partition_id)
    return np.sort(np.asarray(part["index"], dtype=np.int64))
