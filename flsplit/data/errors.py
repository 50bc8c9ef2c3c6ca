"""The ways loading a dataset fails, each with a message that says what to do."""

from __future__ import annotations

import gzip
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """Raised when no usable copy of a dataset is found; the message says where to put it."""


class DatasetError(ValueError):
    """Raised when a dataset is found but cannot be used; the message names the file or folder and the fix."""


class CorruptFileError(DatasetError):
    """Raised when a dataset file (an archive, a CIFAR batch) is truncated or corrupt.

    Without it a truncated download surfaces as a bare ``EOFError`` from deep inside ``gzip``,
    raised in whichever process (a Ray actor, a ClientApp) first read the data.
    """


#: What reading a truncated or damaged ``.tar.gz``/``.tgz``/``.tar``/``.zip`` raises.
ARCHIVE_ERRORS = (EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, gzip.BadGzipFile)


def corrupt(
    path: Path | str, err: BaseException, fix: str = "download it again, or remove it and point data-dir at a good copy"
) -> CorruptFileError:
    """The error for a damaged dataset file: names the file, the cause and the fix."""
    return CorruptFileError(f"data-dir: '{path}' is truncated or corrupt ({type(err).__name__}: {err}); {fix}")


@contextmanager
def reading_archive(path: Path) -> Iterator[None]:
    """Turn what a damaged archive raises while it is read into a ``CorruptFileError`` naming it."""
    try:
        yield
    except ARCHIVE_ERRORS as err:
        raise corrupt(path, err) from None
