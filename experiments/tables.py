"""Result files of the experiment drivers: JSON for machines, a markdown table for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flsplit.markdown import markdown_table

__all__ = ["RESULTS", "markdown_table", "write_results"]

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> str:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return the table."""
    RESULTS.mkdir(exist_ok=True)
    payload: Any = rows if extra is None else extra | {"runs": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    table = markdown_table(rows)
    (RESULTS / f"{name}.md").write_text(table)
    return table
