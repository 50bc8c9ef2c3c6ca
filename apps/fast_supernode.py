"""Launch ``flower-supernode`` with short polls: a version-guarded patch of flwr 1.41 and 1.42.

An idle SuperNode sleeps 3 s whenever its pull finds no message, and after handing a message
to its ClientApp it checks for the reply every 0.5 s, so in flwr 1.41 every round trip
through a SuperNode costs up to 3.5 s of sleeping. This launcher replaces the idle sleep with
``FLSPLIT_SUPERNODE_IDLE_S`` (default 0.25 s) and the reply check with
``FLSPLIT_SUPERNODE_REPLY_POLL_S`` (default 0.05 s; a local state lookup), and sets
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (default 0.1 s, Flower's own knob) for the task
launcher, and starts the retries of its message pulls at 0.02 s (``apps.fast_pull``). Shorter idle waits were measured to be slower on a 2-core machine: the polling
itself then competes with training for the CPU (docs/deploy.md). With ``FLSPLIT_TRACE_DIR``
set, flwr's log lines are also written there, stamped with ``time.time()`` (for ``experiments/deployment_latency.py``).
Nothing changes unless you start SuperNodes with this module:

    python -m apps.fast_supernode --superlink HOST:PORT --node-config "..." [flower-supernode args]

On any other flwr version, or if the loop it patches has changed, it warns and starts the
SuperNode unpatched.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from types import ModuleType

from flsplit import trace
from flsplit.flwr_internals import FlowerChangedError, check_version, step_aside

IDLE_SLEEP_SOURCE = "time.sleep(3)"
FLWR_IDLE_SLEEP_S = 3
REPLY_POLL_SOURCE = "time.sleep(0.5)"  # twice in _push_messages: the reply, then its content
FLWR_REPLY_POLL_S = 0.5


class _ShortIdleSleep:
    """Stands in for the ``time`` module inside ``start_client_internal`` only."""

    def __init__(self, idle_s: float, reply_poll_s: float) -> None:
        self.waits = {FLWR_IDLE_SLEEP_S: idle_s, FLWR_REPLY_POLL_S: reply_poll_s}

    def sleep(self, seconds: float) -> None:
        time.sleep(self.waits.get(seconds, seconds))

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def _target() -> ModuleType:
    from flwr.supernode import start_client_internal  # noqa: PLC0415 - checked before use

    return start_client_internal


def check_supported() -> None:
    """Raise ``FlowerChangedError`` unless the installed flwr has the loop this patch expects."""
    check_version("apps.fast_supernode")
    source = inspect.getsource(_target().start_client_internal)
    if source.count(IDLE_SLEEP_SOURCE) != 1 or "import time" not in inspect.getsource(_target()):
        raise FlowerChangedError("flwr's SuperNode loop changed: its single 'time.sleep(3)' idle wait is gone")
    if inspect.getsource(_target()._push_messages).count(REPLY_POLL_SOURCE) != 2:
        raise FlowerChangedError("flwr's SuperNode loop changed: _push_messages no longer polls with 'time.sleep(0.5)'")


def apply(idle_s: float, reply_poll_s: float = FLWR_REPLY_POLL_S) -> None:
    """Shorten the SuperNode's idle wait and reply poll (seconds) in this process."""
    check_supported()
    _target().time = _ShortIdleSleep(idle_s, reply_poll_s)  # type: ignore[attr-defined]


def _stamp_log_lines(directory: str) -> None:
    """Copy flwr's log lines, prefixed with ``time.time()``, to ``supernode-<pid>.log`` in ``directory``."""
    handler = logging.FileHandler(os.path.join(directory, f"supernode-{os.getpid()}.log"))
    handler.setFormatter(logging.Formatter("%(created).6f %(levelname)s %(message)s"))
    logging.getLogger("flwr").addHandler(handler)


def main() -> None:
    """Apply the patches (or warn and step aside), then run ``flower-supernode`` with the given arguments."""
    from apps import fast_pull  # noqa: PLC0415 - it imports this module

    try:
        apply(float(os.environ.get("FLSPLIT_SUPERNODE_IDLE_S", "0.25")), float(os.environ.get("FLSPLIT_SUPERNODE_REPLY_POLL_S", "0.05")))
    except FlowerChangedError as err:
        step_aside("apps.fast_supernode's short polls", err)
    try:
        fast_pull.apply()  # the SuperNode's pull of each message from the SuperLink
    except FlowerChangedError as err:
        step_aside("apps.fast_pull's short first retry", err)
    if trace.enabled():
        _stamp_log_lines(os.environ[trace.TRACE_ENV])
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    from flwr.supernode.cli import flower_supernode  # noqa: PLC0415

    flower_supernode()


if __name__ == "__main__":
    main()
