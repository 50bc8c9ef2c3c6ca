"""UTC time stamps on flsplit's own log lines.

flsplit logs through Flower's logger, whose console lines carry no time, so a failure's timing
could only be rebuilt from the SuperLink's log. The stamp goes into the message itself, so it
survives every path a line takes: the console, ``flwr run --stream`` and the SuperLink's log.
Flower's own lines are left as Flower writes them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from flwr.common.logger import FLOWER_LOGGER

#: The folders of this project's code (flsplit, apps, strategies) live side by side here.
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
OWN_PACKAGES = tuple(f"{PROJECT_ROOT}/{package}/" for package in ("flsplit", "apps", "strategies"))


def stamp(created: float) -> str:
    """A record's creation time as ``2026-12-07T11:02:03.456Z``."""
    return datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class OwnLinesStamp(logging.Filter):
    """Prefixes the message of records logged from flsplit's own modules with their UTC time."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.pathname.startswith(OWN_PACKAGES) and not getattr(record, "flsplit_stamped", False):
            record.msg = f"{stamp(record.created)} {record.msg}"
            record.flsplit_stamped = True
        return True


def install() -> None:
    """Stamp flsplit's lines in this process (once, however often it is called)."""
    if not any(isinstance(f, OwnLinesStamp) for f in FLOWER_LOGGER.filters):
        FLOWER_LOGGER.addFilter(OwnLinesStamp())
