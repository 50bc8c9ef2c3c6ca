"""Split a training set across clients with flwr-datasets partitioners, in memory."""

from __future__ import annotations

import numpy as np
from datasets import Dataset as HFDataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
    Partitioner,
)


def make_partitioner(
    scheme: str, num_partitions: int, alpha: float, classes_per_client: int, seed: int
) -> Partitioner:
    """The flwr-datasets partitioner for ``iid``, ``dirichlet`` or ``pathological``."""
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
    partitioner = make_partitioner(scheme, num_partitions, alpha, classes_per_client, seed)
    # IidPartitioner takes contiguous shards, and files are often sorted by class: shuffle first.
    order = np.random.default_rng(seed).permutation(len(labels))
    partitioner.dataset = HFDataset.from_dict(
        {"label": labels[order].tolist(), "index": order.tolist()}
    )
    part = partitioner.load_partition(partition_id)
    return np.sort(np.asarray(part["index"], dtype=np.int64))
