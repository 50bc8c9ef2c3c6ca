"""Run outputs: ``<results-dir>/<run-name>/config.json`` and one JSON line per round.

A relative ``results-dir`` is resolved against ``$FLSPLIT_RESULTS_DIR`` or, without it,
``~/flsplit-results``: the ServerApp runs wherever the SuperLink started it (a folder the
user does not see, and with a local SuperLink reused across checkouts, another project's), so
its working directory is never where a run's results should land.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from flsplit.status import write_json_atomic

#: The folder a relative ``results-dir`` is resolved against, when set in the ServerApp's environment.
RESULTS_ENV = "FLSPLIT_RESULTS_DIR"
DEFAULT_RESULTS_BASE = "~/flsplit-results"


def results_base() -> Path:
    """``$FLSPLIT_RESULTS_DIR`` or ``~/flsplit-results``, absolute."""
    configured = os.environ.get(RESULTS_ENV, "")
    base = Path(configured or DEFAULT_RESULTS_BASE).expanduser()
    if not base.is_absolute():
        raise ValueError(f"{RESULTS_ENV}: {configured!r} is relative; set an absolute folder, or unset it for {DEFAULT_RESULTS_BASE}")
    return base


def resolve_results_dir(results_dir: str) -> Path:
    """The absolute folder of ``results-dir``: as given when absolute (``~`` expanded), else under ``results_base()``."""
    path = Path(results_dir).expanduser()
    return (path if path.is_absolute() else results_base() / path).resolve()


def flower_run_dir(run_id: int) -> Path:
    """Where a run whose config cannot be read leaves its status: ``<results base>/flower-run-<run id>``."""
    return results_base().resolve() / f"flower-run-{run_id}"


class ResultsWriter:
    """Writes a run's config once and appends one metrics object per round."""

    def __init__(self, results_dir: str, run_name: str) -> None:
        self.dir = resolve_results_dir(results_dir) / run_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        write_json_atomic(self.dir / "config.json", config)

    def read_config(self) -> dict[str, Any]:
        """The ``config.json`` written by an earlier run of the same name."""
        return json.loads((self.dir / "config.json").read_text(encoding="utf-8"))

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` atomically with ``history`` (used when resuming)."""
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(m, sort_keys=True) + "\n" for m in history)
        os.replace(tmp, self.metrics_path)

    def append(self, metrics: dict[str, Any]) -> None:
        """Append one round's metrics as a JSON line and flush it to disk."""
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file into a list of per-round dicts."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
