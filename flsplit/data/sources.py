"""Datasets by name: CIFAR-10/100 from real files, any ImageFolder, Hugging Face, synthetic.

CIFAR comes as ImageFolder trees, the python pickles, or their archives (read here); the
``imagefolder`` dataset is any such tree (``flsplit/data/imagefolder.py``), and ``hf:<name>`` a
Hugging Face dataset (``flsplit/data/huggingface.py``). Decoding 60,000 JPEGs takes a while,
so the decoded arrays are cached as ``.npy`` files (``$FLSPLIT_CACHE_DIR``, default
``~/.cache/flsplit``) keyed by the source file and its modification time; every later load of
the same source is a plain array read.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from flsplit.data.cache import atomic_save, cache_dir, cached_meta, cached_splits, load_entry
from flsplit.data.errors import DatasetError, DatasetNotFoundError, corrupt, reading_archive
from flsplit.data.huggingface import fingerprint, load_hf, read_hf
from flsplit.data.imagefolder import ImageOptions, find_image_folder, read_image_folder, source_key

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}
_PICKLE_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class ImageSet:
    """Images as ``uint8 (N, H, W, C)`` (C = 3, or 1 for grayscale) and integer labels ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """A train and a test split with the per-channel statistics of the train images."""

    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]  # one value per channel
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()  # class names, where the source has them (ImageFolder, HF)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image, as the network takes it."""
        _, h, w, c = self.train.images.shape
        return (c, h, w)


@dataclass(frozen=True)
class DataOptions:
    """The run-config keys that shape how images are read (``image-size`` ... ``label-column``)."""

    image_size: int = 0
    test_fraction: float = 0.0
    image_column: str = ""
    label_column: str = ""


BUILT_IN = ("cifar10", "cifar100", "synthetic", "imagefolder")
HF_PREFIX = "hf:"


def load_dataset(name: str, data_dir: str = "", seed: int = 0, options: DataOptions = DataOptions()) -> Dataset:
    """Load ``cifar10``, ``cifar100``, ``imagefolder``, ``hf:<name>`` or ``synthetic`` (no files).

    ``options`` applies to ``imagefolder`` and ``hf:`` datasets; the CIFAR readers are exactly
    32x32 RGB and ignore it.
    """
    if name == "synthetic":
        train, test = _synthetic(seed)
    elif name in ("cifar10", "cifar100"):
        train, test = _load_cached(name, Path(data_dir).expanduser() if data_dir else _default_dir())
    else:
        train, test, classes = _load_generic(name, data_dir, seed, options)
        return _with_stats(name, train, test, len(classes), tuple(classes))
    return _with_stats(name, train, test)


def _with_stats(name: str, train: ImageSet, test: ImageSet, num_classes: int = 0, classes: tuple[str, ...] = ()) -> Dataset:
    channels = train.images.shape[-1]
    pixels = train.images.reshape(-1, channels)
    sample = pixels[:: max(1, len(pixels) // 2_000_000)].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in sample.mean(axis=0))
    std = tuple(float(v) for v in sample.std(axis=0))
    return Dataset(name, train, test, num_classes or NUM_CLASSES[name], mean, std, classes)


def _generic_key(name: str, data_dir: str, seed: int, options: DataOptions) -> tuple[str, Path | None]:
    """The cache key of an ``imagefolder`` source (without decoding it), and the source."""
    source = find_image_folder(Path(data_dir).expanduser() if data_dir else _default_dir())
    held_out = f"{options.test_fraction}|{seed}" if options.test_fraction else "0"
    return f"{source_key(source)}|{options.image_size}|{held_out}", source


def _load_generic(name: str, data_dir: str, seed: int, options: DataOptions) -> tuple[ImageSet, ImageSet, list[str]]:
    image_options = ImageOptions(options.image_size, options.test_fraction, seed)
    if name == "imagefolder":
        key, source = _generic_key(name, data_dir, seed, options)
        build = lambda: read_image_folder(source, image_options)  # noqa: E731
        train_x, train_y, test_x, test_y, classes = cached_splits("imagefolder", key, build)
    else:
        repo = name.removeprefix(HF_PREFIX)
        splits = load_hf(repo, data_dir)
        held_out = f"{options.test_fraction}|{seed}" if options.test_fraction else "0"
        key = f"{repo}|{fingerprint(splits)}|{options}|{held_out}"
        build = lambda: read_hf(splits, repo, image_options, options.image_column, options.label_column)  # noqa: E731
        train_x, train_y, test_x, test_y, classes = cached_splits("hf-" + repo.replace("/", "--"), key, build)
    return ImageSet(train_x, train_y), ImageSet(test_x, test_y), classes


@lru_cache(maxsize=8)
def describe_dataset(name: str, data_dir: str = "", seed: int = 0, options: DataOptions = DataOptions()) -> tuple[int, tuple[int, int, int]]:
    """``(num_classes, (channels, height, width))`` of a dataset, as the network must be built.

    CIFAR and ``synthetic`` are known without reading anything. An ``imagefolder`` already
    decoded is described from its cache entry's metadata; otherwise (and for ``hf:``) the
    dataset is loaded once, which fills the cache.
    """
    if name in NUM_CLASSES:
        return NUM_CLASSES[name], (3, 32, 32)
    if name == "imagefolder":
        meta = cached_meta("imagefolder", _generic_key(name, data_dir, seed, options)[0])
        if meta is not None:
            h, w, c = meta["shape"]
            return len(meta["classes"]), (c, h, w)
    data = load_dataset(name, data_dir, seed, options)
    return data.num_classes, data.input_shape


def _default_dir() -> Path:
    return Path(os.environ.get("FLSPLIT_DATA_DIR", "~/.cache/flsplit/data")).expanduser()




# --- cache -------------------------------------------------------------------------------


def _load_cached(name: str, location: Path) -> tuple[ImageSet, ImageSet]:
    source = _find_source(name, location)
    stat = source.stat()
    key = hashlib.sha256(f"{name}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    prefix = cache_dir() / f"{name}-{key.hexdigest()[:16]}"
    parts = [Path(f"{prefix}-{p}.npy") for p in ("train-x", "train-y", "test-x", "test-y")]
    arrays = load_entry(parts)
    if arrays is not None:
        return ImageSet(arrays[0], arrays[1]), ImageSet(arrays[2], arrays[3])
    train, test = _read_source(name, source)
    cache_dir().mkdir(parents=True, exist_ok=True)
    for path, array in zip(parts, (train.images, train.labels, test.images, test.labels)):
        atomic_save(path, array)
    return train, test


# --- finding a source ----------------------------------------------------------------------


def _find_source(name: str, location: Path) -> Path:
    """Return a file or directory holding ``name`` in a supported layout, or download it."""
    candidates = [location]
    if location.is_dir():
        candidates += [
            location / _PICKLE_DIRS[name],
            location / _ARCHIVES[name],
            *sorted(p for p in location.iterdir() if p.is_dir() and _is_image_folder(p)),
            *sorted(location.glob("*.tar.gz")),
            *sorted(location.glob("*.tgz")),
        ]
    for candidate in candidates:
        if candidate.is_dir() and (_is_image_folder(candidate) or _is_pickle_dir(name, candidate)):
            return candidate
        if candidate.is_file() and _archive_layout(name, candidate) is not None:
            return candidate
    return _download(name, location)


def _is_image_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _is_pickle_dir(name: str, path: Path) -> bool:
    marker = "data_batch_1" if name == "cifar10" else "train"
    return (path / marker).is_file() and path.name == _PICKLE_DIRS[name]


def _archive_layout(name: str, archive: Path) -> str | None:
    """``"pickle"`` or ``"folder"`` if the archive holds the dataset, else ``None``.

    A file named like a tar archive that cannot be read as one is a damaged download: that is
    an error naming it, not a reason to look elsewhere.
    """
    if not tarfile.is_tarfile(archive):
        if archive.name.lower().endswith(_TAR_SUFFIXES):
            raise corrupt(archive, tarfile.ReadError("not a readable tar archive"))
        return None
    with reading_archive(archive), tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if _PICKLE_DIRS[name] in parts:
                return "pickle"
            if member.isfile() and member.name.lower().endswith(_IMAGE_SUFFIXES) and len(parts) >= 3:
                if parts[-3] in ("train", "test"):
                    return "folder"
    return None


def _download(name: str, location: Path) -> Path:
    """Fetch the python pickles through torchvision; explain where files go when that fails."""
    try:
        from torchvision import datasets  # noqa: PLC0415 - only needed on this path

        location.mkdir(parents=True, exist_ok=True)
        loader = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        loader(str(location), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not available here"
        raise DatasetNotFoundError(
            f"data-dir: no {name} found at '{location}' and the download failed ({err}). "
            f"Put one of these there: the directory '{_PICKLE_DIRS[name]}/' or the archive "
            f"'{_ARCHIVES[name]}' (python pickles), or an ImageFolder tree "
            f"'train/<class>/*.png|jpg' plus 'test/<class>/...' (or a .tar.gz of it); "
            f"then set the run-config key data-dir to that path."
        ) from None
    return location / _PICKLE_DIRS[name]


# --- reading -------------------------------------------------------------------------------


def _read_source(name: str, source: Path) -> tuple[ImageSet, ImageSet]:
    if source.is_dir():
        if _is_pickle_dir(name, source):
            return _read_pickles(name, lambda f: (source / f).read_bytes(), f"{source}/")
        return _check_classes(name, *(_read_folder_files(source / s) for s in ("train", "test")))
    with reading_archive(source), tarfile.open(source) as tar:
        if _archive_layout(name, source) == "pickle":
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            return _read_pickles(name, lambda f: tar.extractfile(members[f]).read(), f"{source}!/")  # type: ignore[union-attr]
        return _check_classes(name, *_read_folder_tar(tar))


def _read_pickles(name: str, read: Callable[[str], bytes], where: str) -> tuple[ImageSet, ImageSet]:
    """The CIFAR batches, each read by ``read(file)``; ``where`` + file names a batch in errors."""

    def batch(file: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            data = read(file)
        except (FileNotFoundError, KeyError):
            raise DatasetError(
                f"data-dir: the CIFAR batch '{where}{file}' is missing; download {_ARCHIVES[name]} again"
            ) from None
        try:
            entry = pickle.loads(data, encoding="bytes")
            images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry[b"labels" if name == "cifar10" else b"fine_labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise corrupt(f"{where}{file}", err) from None
        if len(labels) != len(images):
            raise corrupt(f"{where}{file}", ValueError(f"{len(images)} images but {len(labels)} labels"))
        return images.transpose(0, 2, 3, 1).copy(), labels

    if name == "cifar10":
        parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
        train = ImageSet(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return train, ImageSet(*batch("test_batch"))
    return ImageSet(*batch("train")), ImageSet(*batch("test"))


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 - Pillow comes with torchvision

    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:
        raise corrupt(where, err) from None
    if array.shape != (32, 32, 3):
        raise DatasetError(
            f"data-dir: the image '{where}' is {array.shape[1]}x{array.shape[0]}, but CIFAR images are 32x32 RGB; "
            "use dataset='imagefolder' (with image-size) for other images"
        )
    return array


def _stack(samples: list[tuple[str, np.ndarray]], classes: list[str]) -> ImageSet:
    index = {c: i for i, c in enumerate(classes)}
    images = np.stack([img for _, img in samples]) if samples else np.zeros((0, 32, 32, 3), np.uint8)
    labels = np.asarray([index[c] for c, _ in samples], dtype=np.int64)
    return ImageSet(images, labels)


def _read_folder_files(root: Path) -> tuple[list[tuple[str, np.ndarray]], set[str]]:
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    return [(p.parent.name, _decode(p.read_bytes(), str(p))) for p in files], {p.parent.name for p in files}


def _read_folder_tar(tar: tarfile.TarFile) -> Iterator[tuple[list[tuple[str, np.ndarray]], set[str]]]:
    splits: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    for member in tar:
        parts = Path(member.name).parts
        if member.isfile() and member.name.lower().endswith(_IMAGE_SUFFIXES) and len(parts) >= 3:
            split, cls = parts[-3], parts[-2]
            if split in splits:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                splits[split].append((member.name, cls, _decode(data, f"{tar.name}!/{member.name}")))
    for split in ("train", "test"):
        ordered = sorted(splits[split], key=lambda item: item[0])
        yield [(cls, img) for _, cls, img in ordered], {cls for _, cls, _ in ordered}


def _check_classes(
    name: str,
    train: tuple[list[tuple[str, np.ndarray]], set[str]],
    test: tuple[list[tuple[str, np.ndarray]], set[str]],
) -> tuple[ImageSet, ImageSet]:
    classes = sorted(train[1] | test[1])
    if len(classes) != NUM_CLASSES[name] or not train[0] or not test[0]:
        raise DatasetNotFoundError(
            f"data-dir: the image folder has {len(classes)} classes, {len(train[0])} train and "
            f"{len(test[0])} test images; {name} needs {NUM_CLASSES[name]} classes in both "
            "train/<class>/ and test/<class>/. Check the dataset key or the path."
        )
    return _stack(train[0], classes), _stack(test[0], classes)


def _synthetic(seed: int, train_size: int = 1024, test_size: int = 256) -> tuple[ImageSet, ImageSet]:
    """A small learnable stand-in: each class is a fixed random pattern plus noise."""
    rng = np.random.default_rng(seed + 12345)
    prototypes = rng.uniform(40, 215, size=(10, 32, 32, 3))

    def draw(n: int) -> ImageSet:
        labels = rng.integers(0, 10, size=n)
        noise = rng.normal(0, 40, size=(n, 32, 32, 3))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        return ImageSet(images, labels.astype(np.int64))

    return draw(train_size), draw(test_size)
