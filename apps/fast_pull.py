"""Shorter first retry when a pulled message's objects have not all arrived: a patch of flwr 1.41 and 1.42.

Flower stores a message before its objects (the arrays, in 5 MiB pieces), so a reader that
pulls a message as soon as it is listed often finds an object not there yet, and then
``pull_objects`` waits ``PULL_INITIAL_BACKOFF`` = 1 s (±20 %) before it asks again. Traced on
loopback, that second was most of the time from the SuperLink to the ServerApp whenever the
ServerApp was already waiting for the reply (``experiments/deployment_latency.py``). This
patch starts the retries at ``FLSPLIT_PULL_BACKOFF_S`` (default 0.02 s; Flower's doubling and
10 s cap stay) where flsplit's processes pull: the ServerApp pulling replies
(``HttpGrid.pull_messages``), the SuperNode pulling a message from the SuperLink, and the
ClientApp pulling it from the SuperNode (``run_clientapp``, in the warm SuperExec's children).
``apply`` raises ``FlowerChangedError`` on any other flwr version or if those call sites
changed; every caller then warns and steps aside (``flsplit.flwr_internals.step_aside``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Callable

from flwr.supercore import constant

from flsplit.flwr_internals import FlowerChangedError, check_version

BACKOFF_ENV = "FLSPLIT_PULL_BACKOFF_S"
DEFAULT_BACKOFF_S = 0.02
FLWR_INITIAL_BACKOFF_S = 1
#: module -> the pulling function it imported by name from flwr.supercore.inflatable.inflatable_utils
CALL_SITES = {
    "flwr.superlink.grid.http_grid": "pull_objects",  # the ServerApp's replies
    "flwr.supernode.start_client_internal": "pull_objects",  # the SuperNode's messages
    "flwr.supernode.runtime.run_clientapp": "pull_and_inflate_object_from_tree",  # the ClientApp's message
}


def check_supported() -> None:
    """Raise ``FlowerChangedError`` unless every call site pulls with Flower's 1 s default."""
    check_version("apps.fast_pull")
    if constant.PULL_INITIAL_BACKOFF != FLWR_INITIAL_BACKOFF_S:
        raise FlowerChangedError(f"flwr's PULL_INITIAL_BACKOFF is {constant.PULL_INITIAL_BACKOFF}, expected {FLWR_INITIAL_BACKOFF_S}")
    for module_name, name in CALL_SITES.items():
        pulling = _original(getattr(importlib.import_module(module_name), name, None))
        if pulling is None or "initial_backoff" not in inspect.signature(pulling).parameters:
            raise FlowerChangedError(f"flwr changed: {module_name}.{name} no longer takes initial_backoff")


def _original(pulling: Callable | None) -> Callable | None:
    return pulling.func if isinstance(pulling, functools.partial) else pulling


def apply(backoff_s: float | None = None) -> float:
    """Patch every call site in this process (idempotent); return the first retry's wait in seconds."""
    check_supported()
    backoff_s = float(os.environ.get(BACKOFF_ENV, DEFAULT_BACKOFF_S)) if backoff_s is None else backoff_s
    if not backoff_s > 0:
        raise ValueError(f"{BACKOFF_ENV} must be a positive number of seconds, got {backoff_s}")
    for module_name, name in CALL_SITES.items():
        module = importlib.import_module(module_name)
        setattr(module, name, functools.partial(_original(getattr(module, name)), initial_backoff=backoff_s))
    return backoff_s
