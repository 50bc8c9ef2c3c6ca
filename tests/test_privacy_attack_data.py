"""The attacker's auxiliary set: class-balanced, from the test split, disjoint from the test targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flsplit.data import load_dataset
from flsplit.privacy.attack_data import attack_data


def test_the_auxiliary_set_is_class_balanced_and_no_test_target_is_in_it():
    # Prepare
    data = load_dataset("synthetic")
    partition = np.arange(100, 300)

    # Execute
    sets = attack_data(data, partition, aux_size=100, target_size=40, seed=0)

    # Assert
    assert torch.bincount(sets.auxiliary.labels, minlength=10).tolist() == [10] * 10
    aux_images = {image.numpy().tobytes() for image in sets.auxiliary.x}
    assert not any(image.numpy().tobytes() in aux_images for image in sets.targets["test"].x)
    train_images = {data.train.images[i].tobytes() for i in partition}
    as_uint8 = (sets.targets["train"].pixels * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert all(image.tobytes() in train_images for image in as_uint8)
    assert len(sets.targets["train"]) == len(sets.targets["test"]) == 40
    assert 0.0 <= float(sets.auxiliary.pixels.min()) and float(sets.auxiliary.pixels.max()) <= 1.0


def test_an_auxiliary_set_larger_than_the_test_split_allows_is_refused_naming_the_option():
    # Prepare
    data = load_dataset("synthetic")  # 256 test images, about 25 per class

    # Execute, Assert
    with pytest.raises(ValueError, match="aux-size"):
        attack_data(data, np.arange(10), aux_size=500, target_size=10)
    with pytest.raises(ValueError, match="aux-size"):
        attack_data(data, np.arange(10), aux_size=5, target_size=10)
