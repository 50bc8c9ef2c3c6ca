"""The two ways loading a dataset fails, each with a message that says what to do."""


class DatasetNotFoundError(FileNotFoundError):
    """Raised when no usable copy of a dataset is found; the message says where to put it."""


class DatasetError(ValueError):
    """Raised when a dataset is found but cannot be used; the message names the file or folder and the fix."""
