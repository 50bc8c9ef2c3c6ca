"""Shared fixtures: tiny datasets written in the real on-disk formats, and an isolated cache."""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsplit.flwr_internals import as_task
from flsplit.launcher import SuperLink


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-array cache in a temp dir, so tests never read or write ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FLSPLIT_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(autouse=True)
def isolated_results(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative results-dirs (and the status of runs whose config cannot be read) in a temp dir, never ~/flsplit-results."""
    results = tmp_path_factory.mktemp("results")
    monkeypatch.setenv("FLSPLIT_RESULTS_DIR", str(results))
    return results


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=n)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/{train,test}/<class>/NNNN.png`` with 10 classes (PNG keeps pixels exact)."""
    root = tmp_path / "cifar10-png"
    for split, n in (("train", 40), ("test", 20)):
        images, labels = _images(n, seed=len(split))
        labels[:10] = np.arange(10)  # every class present
        for i, (img, label) in enumerate(zip(images, labels)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


def _tar(source: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


@pytest.fixture
def image_folder_tar(image_folder: Path, tmp_path: Path) -> Path:
    return _tar(image_folder, tmp_path / "cifar10-png.tar.gz")


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: bytes) -> None:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as handle:
        pickle.dump({b"data": data, label_key: labels.tolist()}, handle)


@pytest.fixture
def cifar10_pickles(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """``cifar-10-batches-py/`` with five tiny train batches and a test batch."""
    root = tmp_path / "c10" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    all_images = []
    for i in range(1, 6):
        images, labels = _images(6, seed=i)
        _write_batch(root / f"data_batch_{i}", images, labels, b"labels")
        all_images.append(images)
    images, labels = _images(5, seed=99)
    _write_batch(root / "test_batch", images, labels, b"labels")
    return root, np.concatenate(all_images)


@pytest.fixture
def cifar100_pickles(tmp_path: Path) -> Path:
    """``cifar-100-python/`` with ``train``, ``test`` and ``meta`` as the real files have."""
    root = tmp_path / "c100" / "cifar-100-python"
    root.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for split, n in (("train", 30), ("test", 12)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        _write_batch(root / split, images, rng.integers(0, 100, size=n), b"fine_labels")
    with open(root / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, handle)
    return root


@pytest.fixture
def cifar100_tar(cifar100_pickles: Path, tmp_path: Path) -> Path:
    return _tar(cifar100_pickles, tmp_path / "cifar-100-python.tar.gz")


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Messages are stamped with the running task's identity, which a Flower runtime sets."""
    with as_task(task_id=1, run_id=1, node_id=1):
        yield


@pytest.fixture(scope="session")
def superlink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SuperLink]:
    """One simulation-mode SuperLink shared by every end-to-end test that can share one (each
    run has its own run ID and results folder), stopped by PID when the session ends."""
    link = SuperLink(tmp_path_factory.mktemp("flwr-home"), env={"FLSPLIT_RESULTS_DIR": str(tmp_path_factory.mktemp("superlink-results"))})
    try:
        yield link
    finally:
        link.stop()


def write_image_folder(
    root: Path, splits: dict[str, int], size: tuple[int, int] = (28, 28), mode: str = "L", classes: int = 10, seed: int = 0
) -> Path:
    """``root/<split>/digit<k>/NNNN.png``: ``n`` generated images per split, every class present.

    Each class is a fixed random pattern plus noise, so a network can learn it.
    """
    rng = np.random.default_rng(seed)
    channels = () if mode == "L" else (3,)
    prototypes = rng.uniform(30, 225, size=(classes, size[0], size[1], *channels))
    for split, n in splits.items():
        for i in range(n):
            label = i % classes
            pixels = np.clip(prototypes[label] + rng.normal(0, 30, prototypes[label].shape), 0, 255).astype(np.uint8)
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode=mode).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def gray_digits(tmp_path: Path) -> Path:
    """A 28x28 grayscale, ten-class ImageFolder tree: 60 train and 30 test images."""
    return write_image_folder(tmp_path / "digits", {"train": 60, "test": 30})
