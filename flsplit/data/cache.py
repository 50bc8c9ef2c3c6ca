"""The on-disk cache of decoded arrays and computed partitions (``$FLSPLIT_CACHE_DIR``).

Decoding tens of thousands of images takes a while, and in deployment every message is a new
process, so decoded splits are cached as ``.npy`` files keyed by their source, and every later
load of the same source is a plain array read.

Entries are written atomically, so a reader never sees half of one; a file damaged anyway (a
full disk, a copied cache, a hand edit) is only a cache miss: it is logged as a warning naming
the file and rebuilt from the source, never an error that stops a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from logging import WARNING
from pathlib import Path

import numpy as np
from flwr.common.logger import log


def cache_dir() -> Path:
    """Where decoded arrays and partitions are cached (``$FLSPLIT_CACHE_DIR``)."""
    return Path(os.environ.get("FLSPLIT_CACHE_DIR", "~/.cache/flsplit")).expanduser()


def atomic_save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` via a temp file and a rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


def _paths(name: str, key: str) -> tuple[list[Path], Path]:
    prefix = cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    arrays = [Path(f"{prefix}-{p}.npy") for p in ("train-x", "train-y", "test-x", "test-y")]
    return arrays, Path(f"{prefix}-meta.json")


def load_entry(paths: Sequence[Path]) -> list[np.ndarray] | None:
    """The arrays of a cache entry, or ``None`` if it is absent or damaged (then the caller rebuilds it).

    Paired arrays (images and their labels) must agree in length; an entry where they do not
    is damaged too.
    """
    if not all(p.exists() for p in paths):
        return None
    arrays = []
    for path in paths:
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (ValueError, EOFError, OSError) as err:
            return _damaged(path, err)
    for x_path, x, y in zip(paths[::2], arrays[::2], arrays[1::2]):
        if len(x) != len(y):
            return _damaged(x_path, ValueError(f"{len(x)} rows beside {len(y)} in its pair"))
    return arrays


def _damaged(path: Path, err: BaseException) -> None:
    log(WARNING, "flsplit: the cache file '%s' is damaged (%s: %s); rebuilding it from the source", path, type(err).__name__, err)
    return None


def _meta(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
        if isinstance(meta.get("classes"), list) and len(meta.get("shape", ())) == 3:
            return meta
        err: BaseException = ValueError("no 'classes' list or 3-value 'shape'")
    except (ValueError, OSError, AttributeError) as caught:
        err = caught
    return _damaged(path, err)


def cached_meta(name: str, key: str) -> dict | None:
    """The ``classes`` and per-image ``shape`` of a cached entry, without reading its arrays."""
    arrays, meta = _paths(name, key)
    if meta.exists() and all(p.exists() for p in arrays):
        return _meta(meta)
    return None


def cached_splits(name: str, key: str, build: Callable[[], Splits]) -> Splits:
    """``(train_x, train_y, test_x, test_y, classes)`` from the cache, or built and then cached.

    ``key`` names the source exactly (path, size and modification time of its files, and every
    option that changes the arrays); a changed source is a new key, so a stale entry is never
    read.
    """
    arrays, meta = _paths(name, key)
    found = load_entry(arrays) if meta.exists() else None
    described = _meta(meta) if found is not None else None
    if found is not None and described is not None:
        return (*found, described["classes"])  # type: ignore[return-value]
    train_x, train_y, test_x, test_y, classes = build()
    meta.parent.mkdir(parents=True, exist_ok=True)
    for path, array in zip(arrays, (train_x, train_y, test_x, test_y)):
        atomic_save(path, array)
    fd, tmp = tempfile.mkstemp(dir=meta.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump({"classes": list(classes), "shape": list(train_x.shape[1:])}, handle)
    os.replace(tmp, meta)
    return train_x, train_y, test_x, test_y, list(classes)
