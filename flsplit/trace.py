"""Wall-clock stamps of one message's journey, written only when ``FLSPLIT_TRACE_DIR`` is set.

``experiments/deployment_latency.py`` sets the variable on the SuperLink and the SuperNodes,
so the ServerApp, the ClientApp and the SuperNode's log all stamp the same message with
``time.time()`` (one clock on loopback) and the driver can split the round trip into parts.
Unset, every call here returns at once and writes nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TRACE_ENV = "FLSPLIT_TRACE_DIR"


def enabled() -> bool:
    """Whether this process writes stamps."""
    return bool(os.environ.get(TRACE_ENV))


def record(event: str, **fields: object) -> None:
    """Append one stamp (``event``, now, and ``fields``) to this process's trace file."""
    directory = os.environ.get(TRACE_ENV)
    if not directory:
        return
    line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **fields})
    with open(Path(directory) / f"{event}-{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
        out.write(line + "\n")


def process_started_at() -> float:
    """When this process was created (a fork or an exec), in ``time.time()`` seconds.

    From ``/proc`` (Linux), to 1/``SC_CLK_TCK`` s (10 ms); ``nan`` where there is no ``/proc``.
    """
    try:
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return float("nan")
    age_s = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age_s


def read(directory: Path, event: str) -> list[dict]:
    """Every stamp of ``event`` written under ``directory``, in file order per process."""
    rows = []
    for path in sorted(directory.glob(f"{event}-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows
