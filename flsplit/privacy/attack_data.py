"""The images the attacks learn from and the images they are scored on.

All training images are partitioned among the clients, so the attacker's **auxiliary set** is
drawn from the test split: ``aux_size`` images, class-balanced, chosen with a fixed seed. The
attacks are scored on two **target sets**: a client's own training images (the server saw their
activations while it trained) and test images disjoint from the auxiliary set. Images are not
augmented, so every run of the report scores the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flsplit.data import Dataset
from flsplit.data.augment import to_tensor


@dataclass(frozen=True)
class ImageBatch:
    """Normalised images (the network's input), their ``[0, 1]`` pixels, and labels."""

    x: torch.Tensor
    pixels: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class AttackData:
    """The auxiliary set and the two target sets, with how each was drawn."""

    auxiliary: ImageBatch
    targets: dict[str, ImageBatch]  # "train" (the client's own images) and "test" (held out)
    description: dict[str, str]


def attack_data(data: Dataset, partition: np.ndarray, aux_size: int, target_size: int, seed: int = 0) -> AttackData:
    """The class-balanced auxiliary set and the target sets of one client's ``partition``."""
    test_labels = data.test.labels
    classes = data.num_classes
    per_class = aux_size // classes
    if per_class < 1:
        raise ValueError(f"aux-size: {aux_size} images cannot hold one per class of {classes}; raise it to at least {classes}")
    rng = np.random.default_rng([seed, 30])
    auxiliary = []
    for c in range(classes):
        members = np.flatnonzero(test_labels == c)
        if len(members) < per_class:
            raise ValueError(
                f"aux-size: the test split has {len(members)} images of class {c}, fewer than the {per_class} per class "
                f"that aux-size = {aux_size} needs; lower aux-size"
            )
        auxiliary.extend(rng.choice(members, per_class, replace=False))
    auxiliary = np.sort(np.array(auxiliary))
    held_out = np.setdiff1d(np.arange(len(test_labels)), auxiliary)
    if len(held_out) == 0:
        raise ValueError(f"aux-size: {aux_size} leaves no test image to score the attacks on; lower it")
    test_targets = np.sort(rng.choice(held_out, min(target_size, len(held_out)), replace=False))
    train_targets = np.sort(rng.choice(partition, min(target_size, len(partition)), replace=False))
    description = {
        "auxiliary": f"{len(auxiliary)} test-split images, {per_class} per class, seed {seed}",
        "train": f"{len(train_targets)} of the client's {len(partition)} training images (not augmented)",
        "test": f"{len(test_targets)} test-split images outside the auxiliary set",
    }
    return AttackData(
        _batch(data, data.test.images[auxiliary], test_labels[auxiliary]),
        {
            "train": _batch(data, data.train.images[train_targets], data.train.labels[train_targets]),
            "test": _batch(data, data.test.images[test_targets], test_labels[test_targets]),
        },
        description,
    )


def _batch(data: Dataset, images: np.ndarray, labels: np.ndarray) -> ImageBatch:
    x = to_tensor(images, data.mean, data.std)
    pixels = x * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(1, -1, 1, 1)
    return ImageBatch(x, pixels.clamp(0, 1), torch.from_numpy(np.asarray(labels)).long())
