"""Launch ``flower-supernode`` with a short idle poll: a version-guarded patch of flwr 1.41.

An idle SuperNode sleeps 3 s whenever its pull finds no message, and it only pushes a
finished reply on its next loop, so in flwr 1.41 every round trip through a SuperNode costs up
to 3 s of sleeping. This launcher replaces that one sleep with ``FLSPLIT_SUPERNODE_IDLE_S``
(default 0.25 s) and sets ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (default 0.1 s, Flower's own
knob) for the task launcher. Shorter waits were measured to be slower on a 2-core machine: the
polling itself then competes with training for the CPU (docs/deploy.md). Nothing changes
unless you start SuperNodes with this module:

    python -m apps.fast_supernode --superlink HOST:PORT --node-config "..." [flower-supernode args]

The patch refuses to apply to any other flwr version, or if the loop it patches has changed.
"""

from __future__ import annotations

import inspect
import os
import time
from types import ModuleType

import flwr

SUPPORTED_VERSIONS = ("1.41.",)
IDLE_SLEEP_SOURCE = "time.sleep(3)"
FLWR_IDLE_SLEEP_S = 3


class FlowerChangedError(RuntimeError):
    """The installed flwr is not the one this patch was written against."""


class _ShortIdleSleep:
    """Stands in for the ``time`` module inside ``start_client_internal`` only."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s

    def sleep(self, seconds: float) -> None:
        time.sleep(self.idle_s if seconds == FLWR_IDLE_SLEEP_S else seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def _target() -> ModuleType:
    from flwr.supernode import start_client_internal  # noqa: PLC0415 - checked before use

    return start_client_internal


def check_supported() -> None:
    """Raise ``FlowerChangedError`` unless the installed flwr has the loop this patch expects."""
    if not flwr.__version__.startswith(SUPPORTED_VERSIONS):
        raise FlowerChangedError(f"apps.fast_supernode supports flwr {SUPPORTED_VERSIONS}, found {flwr.__version__}")
    source = inspect.getsource(_target().start_client_internal)
    if source.count(IDLE_SLEEP_SOURCE) != 1 or "import time" not in inspect.getsource(_target()):
        raise FlowerChangedError("flwr's SuperNode loop changed: its single 'time.sleep(3)' idle wait is gone")


def apply(idle_s: float) -> None:
    """Shorten the SuperNode's idle wait to ``idle_s`` seconds in this process."""
    check_supported()
    _target().time = _ShortIdleSleep(idle_s)  # type: ignore[attr-defined]


def main() -> None:
    """Apply the patch, then run ``flower-supernode`` with the given arguments."""
    apply(float(os.environ.get("FLSPLIT_SUPERNODE_IDLE_S", "0.25")))
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    from flwr.supernode.cli import flower_supernode  # noqa: PLC0415

    flower_supernode()


if __name__ == "__main__":
    main()
