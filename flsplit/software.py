"""What actually ran: the interpreter and the versions of flsplit, Flower and torch in this process.

A local SuperLink outlives ``flwr run`` and serves the next one from whichever virtualenv it
was started in, so the code that runs is not always the code the user installed. The
ServerApp and every ClientApp record this in ``config.json`` so a run says what it ran on.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import flwr
import torch

import flsplit


def software() -> dict[str, str]:
    """The interpreter, and the version and location of flsplit, and the flwr and torch versions."""
    try:
        flsplit_version = metadata.version("flsplit")
    except metadata.PackageNotFoundError:
        flsplit_version = "not installed"
    return {
        "python_executable": sys.executable,
        "flsplit_version": flsplit_version,
        "flsplit_path": str(Path(flsplit.__file__).resolve().parent),
        "flwr_version": flwr.__version__,
        "torch_version": torch.__version__,
    }
