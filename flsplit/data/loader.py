"""Deterministic batches of one client's partition.

Batch ``step`` is a pure function of (seed, partition, step): the epoch's shuffle and the
augmentation are seeded from those numbers. A client therefore persists only a step counter
between messages, and any process can rebuild the exact batch.
"""

from __future__ import annotations

import numpy as np
import torch

from flsplit.data.augment import augment, to_tensor
from flsplit.data.sources import Dataset, ImageSet


class PartitionLoader:
    """Shuffled, augmented training batches of one partition, addressed by global step."""

    def __init__(
        self, data: Dataset, indices: np.ndarray, batch_size: int, seed: int, partition_id: int
    ) -> None:
        self.images = data.train.images[indices]
        self.labels = data.train.labels[indices]
        self.mean, self.std = data.mean, data.std
        self.batch_size = batch_size
        self.seed, self.partition_id = seed, partition_id
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def batches_per_epoch(self) -> int:
        """Number of batches in one pass over the partition (the last one may be short)."""
        return -(-len(self.labels) // self.batch_size)

    def samples_in(self, first_step: int, end_step: int) -> int:
        """How many samples batches ``first_step`` up to (not including) ``end_step`` hold (an epoch's last batch may be short)."""
        per_epoch, last = self.batches_per_epoch, len(self.labels) - (self.batches_per_epoch - 1) * self.batch_size
        return sum(last if step % per_epoch == per_epoch - 1 else self.batch_size for step in range(first_step, end_step))

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, self.partition_id, epoch])
            self._order = (epoch, rng.permutation(len(self.labels)))
        return self._order[1]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented, normalised batch number ``step`` (counted across epochs)."""
        epoch, position = divmod(step, self.batches_per_epoch)
        chosen = self._epoch_order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.partition_id, step]).generate_state(1)[0])
        )
        x = augment(to_tensor(self.images[chosen], self.mean, self.std), generator)
        return x, torch.from_numpy(self.labels[chosen])


def eval_indices(data: Dataset, limit: int = 0) -> np.ndarray:
    """Indices of the official test split to evaluate on, in a fixed order.

    ``limit`` > 0 keeps a fixed random subset of that size (files are often sorted by class,
    so a prefix would be biased).
    """
    size = len(data.test)
    if 0 < limit < size:
        return np.sort(np.random.default_rng(0).permutation(size)[:limit])
    return np.arange(size)


def test_tensors(data: Dataset, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised, non-augmented test images and labels at ``indices``."""
    test: ImageSet = data.test
    return to_tensor(test.images[indices], data.mean, data.std), torch.from_numpy(test.labels[indices])
