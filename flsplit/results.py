"""Run outputs: ``<results-dir>/<run-name>/config.json`` and one JSON line per round."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class ResultsWriter:
    """Writes a run's config once and appends one metrics object per round."""

    def __init__(self, results_dir: str, run_name: str) -> None:
        self.dir = Path(results_dir).expanduser().resolve() / run_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` atomically."""
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
        os.replace(tmp, self.dir / "config.json")

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
