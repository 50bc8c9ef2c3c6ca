"""Dataset readers, the decode cache, partitioners, augmentation and deterministic batches."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flsplit.data import DatasetNotFoundError, PartitionLoader, eval_indices, load_dataset, partition_indices, sources
from flsplit.data.augment import augment


def test_image_folder_directory_and_archive_load_the_same_pixels(image_folder: Path, image_folder_tar: Path) -> None:
    # Execute
    from_dir = load_dataset("cifar10", str(image_folder))
    from_tar = load_dataset("cifar10", str(image_folder_tar))
    # Assert
    assert from_dir.train.images.shape == (40, 32, 32, 3) and len(from_dir.test) == 20
    assert np.array_equal(from_dir.train.images, from_tar.train.images)
    assert np.array_equal(from_dir.train.labels, from_tar.train.labels)
    assert set(from_dir.train.labels.tolist()) == set(range(10))


def test_image_folder_found_one_level_below_data_dir(image_folder: Path) -> None:
    data = load_dataset("cifar10", str(image_folder.parent))
    assert len(data.train) == 40


def test_cifar10_pickles_decode_to_hwc_images_in_file_order(cifar10_pickles: tuple[Path, np.ndarray]) -> None:
    # Prepare
    root, expected = cifar10_pickles
    # Execute
    data = load_dataset("cifar10", str(root.parent))
    # Assert
    assert np.array_equal(data.train.images, expected)
    assert len(data.test) == 5 and data.num_classes == 10


def test_cifar100_pickles_from_directory_and_tarball(cifar100_pickles: Path, cifar100_tar: Path) -> None:
    from_dir = load_dataset("cifar100", str(cifar100_pickles.parent))
    from_tar = load_dataset("cifar100", str(cifar100_tar))
    assert from_dir.num_classes == 100 and len(from_dir.train) == 30 and len(from_dir.test) == 12
    assert np.array_equal(from_dir.train.images, from_tar.train.images)
    assert np.array_equal(from_dir.test.labels, from_tar.test.labels)


def test_second_load_reads_the_cache_instead_of_decoding(image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    first = load_dataset("cifar10", str(image_folder))

    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources, "_read_source", no_decoding)
    # Execute
    second = load_dataset("cifar10", str(image_folder))
    # Assert
    assert np.array_equal(first.train.images, second.train.images)


def test_missing_dataset_says_where_to_put_which_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: make the torchvision download fail as it does offline
    import torchvision.datasets

    def offline(*_: object, **__: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    # Execute / Assert
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar100", str(tmp_path / "empty"))
    text = str(err.value)
    assert "data-dir" in text and "cifar-100-python" in text and "network unreachable" in text


def test_wrong_class_count_is_a_clear_error(image_folder: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="100 classes"):
        load_dataset("cifar100", str(image_folder))


def test_synthetic_dataset_is_deterministic_and_needs_no_files() -> None:
    a, b = load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=3)
    assert np.array_equal(a.train.images, b.train.images) and a.num_classes == 10


def test_channel_statistics_come_from_the_train_images(image_folder: Path) -> None:
    data = load_dataset("cifar10", str(image_folder))
    expected = data.train.images.reshape(-1, 3).mean(axis=0) / 255
    assert np.allclose(data.mean, expected, atol=1e-6)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "pathological"])
def test_partitions_are_disjoint(scheme: str) -> None:
    # Prepare
    labels = np.random.default_rng(0).integers(0, 10, size=2000)
    # Execute
    parts = [partition_indices(labels, i, 4, scheme, alpha=0.5, classes_per_client=2, seed=1) for i in range(4)]
    # Assert
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined))
    if scheme != "pathological":
        assert len(joined) == len(labels)


def test_iid_partitions_have_equal_size_and_all_classes_even_from_sorted_labels() -> None:
    labels = np.repeat(np.arange(10), 100)  # sorted by class, as ImageFolder trees are
    parts = [partition_indices(labels, i, 5, "iid", seed=0) for i in range(5)]
    assert [len(p) for p in parts] == [200] * 5
    assert all(len(np.unique(labels[p])) == 10 for p in parts)


def test_pathological_partitions_hold_at_most_k_classes() -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=2000)
    for i in range(5):
        part = partition_indices(labels, i, 5, "pathological", classes_per_client=2, seed=0)
        assert len(np.unique(labels[part])) <= 2


def test_dirichlet_with_small_alpha_is_skewed() -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=5000)
    part = partition_indices(labels, 0, 5, "dirichlet", alpha=0.1, seed=0)
    counts = np.bincount(labels[part], minlength=10)
    assert counts.max() > 3 * np.median(counts)


def test_augment_returns_padded_crops_possibly_flipped() -> None:
    # Prepare
    x = torch.randn(16, 3, 32, 32)
    padded = F.pad(x, (4, 4, 4, 4))
    # Execute
    out = augment(x, torch.Generator().manual_seed(0))
    # Assert
    for i in range(16):
        crops = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_batches_are_a_pure_function_of_seed_partition_and_step() -> None:
    # Prepare
    data = load_dataset("synthetic")
    indices = np.arange(100)
    a = PartitionLoader(data, indices, batch_size=32, seed=0, partition_id=1)
    b = PartitionLoader(data, indices, batch_size=32, seed=0, partition_id=1)
    # Execute
    x5, y5 = a.batch(5)
    a.batch(0)
    # Assert
    assert torch.equal(x5, b.batch(5)[0]) and torch.equal(y5, b.batch(5)[1])
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])
    assert a.batches_per_epoch == 4 and len(a.batch(3)[1]) == 4  # short last batch


def test_one_epoch_visits_every_sample_once() -> None:
    data = load_dataset("synthetic")
    loader = PartitionLoader(data, np.arange(50, 150), batch_size=32, seed=0, partition_id=0)
    seen = torch.cat([loader.batch(s)[1] for s in range(loader.batches_per_epoch)])
    assert sorted(seen.tolist()) == sorted(data.train.labels[50:150].tolist())


def test_eval_subset_is_fixed_and_spans_the_test_split() -> None:
    data = load_dataset("synthetic")
    assert np.array_equal(eval_indices(data, 0), np.arange(len(data.test)))
    subset = eval_indices(data, 50)
    assert len(subset) == 50 and np.array_equal(subset, eval_indices(data, 50)) and subset.max() > 100
