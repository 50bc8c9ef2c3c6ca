"""Every damaged dataset file stops the load with an error naming the file and the fix; a
damaged cache entry is rebuilt with a warning naming it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from flsplit.data import DatasetError, load_dataset, partition_indices
from flsplit.data.errors import CorruptFileError


def _truncated(archive: Path, folder: Path) -> Path:
    """A copy of ``archive`` in ``folder`` cut to half its bytes, as an interrupted download leaves it."""
    folder.mkdir()
    data = archive.read_bytes()
    copy = folder / archive.name
    copy.write_bytes(data[: len(data) // 2])
    return copy


def test_truncated_cifar_archive_names_itself_and_the_fix(cifar100_tar: Path, tmp_path: Path) -> None:
    # Prepare
    archive = _truncated(cifar100_tar, tmp_path / "cut")
    # Execute
    with pytest.raises(CorruptFileError) as raised:
        load_dataset("cifar100", str(archive.parent))
    # Assert: the bare EOFError of gzip became an error that says which file and what to do
    message = str(raised.value)
    assert str(archive) in message and "truncated or corrupt" in message and "EOFError" in message
    assert "download it again" in message


def test_garbage_under_the_archive_name_is_reported_not_downloaded_over(tmp_path: Path) -> None:
    # Prepare: a file with the archive's name that is no archive at all (an HTML error page)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_text("<html>503 Service Unavailable</html>")
    # Execute
    with pytest.raises(CorruptFileError) as raised:
        load_dataset("cifar10", str(tmp_path))
    # Assert
    assert str(archive) in str(raised.value) and "download it again" in str(raised.value)


def test_truncated_image_folder_archive_names_itself(image_folder_tar: Path, tmp_path: Path) -> None:
    # Prepare
    archive = _truncated(image_folder_tar, tmp_path / "cut")
    # Execute
    with pytest.raises(CorruptFileError) as raised:
        load_dataset("imagefolder", str(archive))
    # Assert
    assert str(archive) in str(raised.value) and "truncated or corrupt" in str(raised.value)


def test_truncated_zip_names_itself(image_folder: Path, tmp_path: Path) -> None:
    # Prepare
    archive = Path(shutil.make_archive(str(tmp_path / "digits"), "zip", image_folder.parent, image_folder.name))
    archive = _truncated(archive, tmp_path / "cut")
    # Execute
    with pytest.raises(CorruptFileError) as raised:
        load_dataset("imagefolder", str(archive))
    # Assert
    assert str(archive) in str(raised.value) and "BadZipFile" in str(raised.value)


def test_unreadable_cifar_batch_names_the_batch(cifar10_pickles: tuple[Path, np.ndarray]) -> None:
    # Prepare: the third training batch cut short
    root, _ = cifar10_pickles
    batch = root / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    # Execute
    with pytest.raises(CorruptFileError) as raised:
        load_dataset("cifar10", str(root))
    # Assert
    assert str(batch) in str(raised.value) and "truncated or corrupt" in str(raised.value)


def test_missing_cifar_batch_names_the_batch(cifar10_pickles: tuple[Path, np.ndarray]) -> None:
    # Prepare
    root, _ = cifar10_pickles
    (root / "test_batch").unlink()
    # Execute
    with pytest.raises(DatasetError) as raised:
        load_dataset("cifar10", str(root))
    # Assert
    assert str(root / "test_batch") in str(raised.value) and "missing" in str(raised.value)


def _damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_damaged_array_cache_is_rebuilt_with_a_warning_naming_the_file(
    cifar10_pickles: tuple[Path, np.ndarray], isolated_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a filled cache, then one of its files cut in half
    root, images = cifar10_pickles
    load_dataset("cifar10", str(root))
    damaged = next(isolated_cache.glob("cifar10-*-train-x.npy"))
    _damage(damaged)
    # Execute
    with caplog.at_level(logging.WARNING):
        data = load_dataset("cifar10", str(root))
    # Assert: the right pixels, a warning that names the file, and a cache that reads cleanly again
    assert np.array_equal(data.train.images, images)
    assert str(damaged) in caplog.text and "rebuilding it" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_dataset("cifar10", str(root))
    assert "damaged" not in caplog.text


def test_damaged_image_folder_cache_metadata_is_rebuilt(image_folder: Path, isolated_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    first = load_dataset("imagefolder", str(image_folder))
    meta = next(isolated_cache.glob("imagefolder-*-meta.json"))
    meta.write_text('{"classes": ')
    # Execute
    with caplog.at_level(logging.WARNING):
        again = load_dataset("imagefolder", str(image_folder))
    # Assert
    assert again.classes == first.classes and np.array_equal(again.train.images, first.train.images)
    assert str(meta) in caplog.text


def test_damaged_partition_cache_is_rebuilt_to_the_same_indices(isolated_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    labels = np.arange(100) % 10
    first = partition_indices(labels, 1, 4, "iid")
    cached = next((isolated_cache / "partitions").glob("*.npy"))
    cached.write_bytes(b"")
    # Execute
    with caplog.at_level(logging.WARNING):
        again = partition_indices(labels, 1, 4, "iid")
    # Assert
    assert np.array_equal(again, first) and str(cached) in caplog.text
