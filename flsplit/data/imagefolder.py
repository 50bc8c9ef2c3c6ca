"""Any ImageFolder dataset: ``train/<class>/*`` and ``test/<class>/*``, as a tree or an archive.

Classes are the folder names, sorted; images may be grayscale or RGB and of any size. Every
problem a new user meets (a corrupt file, an empty class folder, classes in one split only,
images of several sizes) stops the load with an error that names the file or folder and the
fix. Decoding and resizing use Pillow and torchvision's transforms, the same well-tested code
torchvision's own ``ImageFolder`` relies on, rather than hand-written pixel code.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from flsplit.data.errors import DatasetError, reading_archive

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@dataclass(frozen=True)
class ImageOptions:
    """How images become arrays: the run-config keys ``image-size`` and ``test-fraction``."""

    image_size: int = 0  # 0: keep the size (all images must agree)
    test_fraction: float = 0.0  # > 0: hold out this part of train/ when there is no test/
    seed: int = 0  # seeds the held-out split


def to_array(data: bytes | object, where: str, image_size: int = 0) -> np.ndarray:
    """Decode one image (bytes or a PIL image) to ``uint8 (H, W)`` (grayscale) or ``(H, W, 3)``.

    With ``image_size`` > 0 the shorter side is resized to ``image_size`` (bilinear, with
    antialiasing) and the centre ``image_size x image_size`` is cropped: torchvision's
    ``Resize`` + ``CenterCrop``, the usual evaluation transform, which keeps the aspect ratio.
    ``where`` (the file) goes into the error if the image cannot be read.
    """
    from PIL import Image  # noqa: PLC0415 - Pillow comes with torchvision
    from torchvision.transforms import v2  # noqa: PLC0415

    try:
        image = Image.open(io.BytesIO(data)) if isinstance(data, bytes) else data
        image.load()  # type: ignore[attr-defined]
        image = image.convert("L" if image.mode in _GRAY_MODES else "RGB")  # type: ignore[attr-defined]
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"data-dir: cannot read the image '{where}' ({err}); replace or delete the file") from None
    if image_size:
        image = v2.CenterCrop(image_size)(v2.Resize(image_size, antialias=True)(image))
    return np.asarray(image, dtype=np.uint8)


def stack_images(arrays: list[np.ndarray], where: list[str], image_size: int, root: str) -> np.ndarray:
    """Stack decoded images as ``uint8 (N, H, W, C)``: C = 1 if all are grayscale, else 3.

    Without ``image-size`` all images must have one size; otherwise the error lists each size
    found with an example file.
    """
    sizes: dict[tuple[int, int], str] = {}
    for array, name in zip(arrays, where):
        sizes.setdefault(array.shape[:2], name)
    if len(sizes) > 1:
        found = ", ".join(f"{h}x{w} (e.g. {name})" for (h, w), name in sorted(sizes.items()))
        raise DatasetError(
            f"data-dir: the images in '{root}' have {len(sizes)} sizes: {found}; set the run-config key "
            "image-size (e.g. image-size=32) to resize them all to one square size"
        )
    channels = 1 if all(a.ndim == 2 for a in arrays) else 3
    out = []
    for array in arrays:
        if array.ndim == 2:
            array = array[:, :, None]
        if array.shape[2] != channels:  # a grayscale image among colour ones: L -> RGB, as Pillow does
            array = np.repeat(array, channels, axis=2)
        out.append(array)
    if not out:
        h = w = image_size or 32
        return np.zeros((0, h, w, channels), np.uint8)
    return np.stack(out)


# --- finding and listing a tree --------------------------------------------------------------


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def find_image_folder(location: Path) -> Path:
    """The tree or archive at ``location``, or the first one directly inside it."""
    if (location / "train").is_dir() or is_archive(location):
        return location
    if location.is_dir():
        for candidate in sorted(location.iterdir()):
            if (candidate / "train").is_dir() or is_archive(candidate):
                return candidate
    raise DatasetError(
        f"data-dir: no ImageFolder dataset at '{location}'. Expected a folder with 'train/<class>/<image>' "
        "and 'test/<class>/<image>' (or only train/ and the key test-fraction), or a .tar.gz/.zip of one; "
        "set the run-config key data-dir to it"
    )


def source_key(source: Path) -> str:
    """What identifies the source's content: every file's path, size and modification time."""
    if source.is_file():
        stat = source.stat()
        return f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    entries = []
    for folder, _, files in sorted(os.walk(source)):
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            entries.append(f"{os.path.relpath(os.path.join(folder, name), source)}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{source.resolve()}|" + "|".join(entries)


@dataclass
class _Split:
    root: str  # the split folder, for error messages
    classes: dict[str, list[tuple[str, bytes]]]  # class -> [(file, bytes)], files sorted


def _entries(source: Path) -> Iterator[tuple[PurePosixPath, bytes | None]]:
    """``(path, bytes)`` of every file, and ``(path, None)`` of every folder, in the source."""
    if source.is_dir():
        for folder, dirs, files in os.walk(source):
            for name in dirs:
                yield PurePosixPath(Path(folder, name).as_posix()), None
            for name in files:
                yield PurePosixPath(Path(folder, name).as_posix()), Path(folder, name).read_bytes()
    elif source.name.lower().endswith(".zip"):
        with reading_archive(source), zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                path = PurePosixPath(f"{source}!/{info.filename.rstrip('/')}")
                yield path, None if info.is_dir() else archive.read(info)
    else:
        with reading_archive(source), tarfile.open(source) as archive:
            for member in archive:
                path = PurePosixPath(f"{source}!/{member.name}")
                if member.isdir():
                    yield path, None
                elif member.isfile():
                    yield path, archive.extractfile(member).read()  # type: ignore[union-attr]


def _read_splits(source: Path) -> dict[str, _Split]:
    splits: dict[str, _Split] = {}
    for path, data in _entries(source):
        parts = path.parts
        if data is None:  # a folder: train/<class> registers the class, even if empty
            if len(parts) >= 2 and parts[-2] in ("train", "test"):
                split = splits.setdefault(parts[-2], _Split(str(path.parent), {}))
                split.classes.setdefault(parts[-1], [])
            continue
        if len(parts) >= 3 and parts[-3] in ("train", "test"):
            split = splits.setdefault(parts[-3], _Split(str(path.parent.parent), {}))
            files = split.classes.setdefault(parts[-2], [])
            if path.name.lower().endswith(IMAGE_SUFFIXES):
                files.append((str(path), data))
    for split in splits.values():
        for files in split.classes.values():
            files.sort()
    return splits


def _check(splits: dict[str, _Split], source: Path, options: ImageOptions) -> list[str]:
    if "train" not in splits:
        raise DatasetError(f"data-dir: '{source}' has no train/<class>/ folders; see docs/outputs.md for the layout")
    for split in splits.values():
        for name, files in sorted(split.classes.items()):
            if not files:
                raise DatasetError(
                    f"data-dir: the class folder '{split.root}/{name}' holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                    "add images or delete the folder"
                )
    train = set(splits["train"].classes)
    if "test" in splits:
        test = set(splits["test"].classes)
        if options.test_fraction:
            raise DatasetError(f"test-fraction: '{source}' has its own test/ split; set test-fraction = 0 or delete test/")
        if train != test:
            only = [f"{sorted(a - b)} only in '{splits[s].root}'" for a, b, s in ((train, test, "train"), (test, train, "test")) if a - b]
            raise DatasetError(
                f"data-dir: the splits have different classes: {'; '.join(only)}; every class needs a folder "
                "in both train/ and test/ (or delete test/ and set test-fraction)"
            )
    elif not options.test_fraction:
        raise DatasetError(
            f"test-fraction: '{source}' has train/ but no test/ split; add test/<class>/ folders or set "
            "test-fraction (e.g. 0.2) to hold out a seeded, stratified part of train/"
        )
    return sorted(train)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, test)`` indices: ``fraction`` of each class, seeded, goes to test.

    Each class of two or more samples keeps at least one sample on each side.
    """
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = len(members)
        take = min(max(1, round(n * fraction)), n - 1) if n > 1 else 0
        test.append(rng.permutation(members)[:take])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def read_image_folder(source: Path, options: ImageOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Decode a tree or archive to ``(train_x, train_y, test_x, test_y, classes)``."""
    splits = _read_splits(source)
    classes = _check(splits, source, options)
    index = {name: i for i, name in enumerate(classes)}
    arrays, labels, where = [], [], []
    for split_name in ("train", "test"):
        if split_name not in splits:
            continue
        for name, files in sorted(splits[split_name].classes.items()):
            for file, data in files:
                arrays.append(to_array(data, file, options.image_size))
                labels.append((split_name, index[name]))
                where.append(file)
    images = stack_images(arrays, where, options.image_size, str(source))
    is_test = np.array([s == "test" for s, _ in labels], dtype=bool)
    y = np.array([label for _, label in labels], dtype=np.int64)
    if "test" in splits:
        train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        train_idx, test_idx = stratified_split(y, options.test_fraction, options.seed)
    return images[train_idx], y[train_idx], images[test_idx], y[test_idx], classes
