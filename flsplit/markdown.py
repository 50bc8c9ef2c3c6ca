"""Markdown tables for people: one row per dict, as the experiment drivers and ``flsplit compare`` write them."""

from __future__ import annotations

from typing import Any


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as a markdown table, floats to 4 significant digits, ``None`` as "-".

    Parameters
    ----------
    rows : list of dict
        One dict per row; the first row's keys are the header.

    Returns
    -------
    str
        The table, one line per row, ending in a newline.

    Examples
    --------
    >>> print(markdown_table([{"run": "a", "acc": 0.123456}]), end="")
    | run | acc |
    |---|---|
    | a | 0.1235 |
    """
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(v) for v in row.values()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
