"""The ``flsplit`` console command.

``flsplit compare RESULTS... [--output DIR]`` turns run folders into a comparison report
(``comparison.png`` and ``comparison.md``, see ``flsplit/report.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from flsplit import report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flsplit", description="Tools around flsplit's run outputs.")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare",
        help="plot and tabulate runs side by side",
        description="Test accuracy against rounds, communication and wall clock, one line per run, "
        "and a markdown table of the runs.",
    )
    compare.add_argument(
        "paths", nargs="+", help="run folders (config.json + metrics.jsonl), or folders that hold them (e.g. results/)"
    )
    compare.add_argument(
        "--output", "-o", default="report", help="folder for comparison.png and comparison.md (default: report)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flsplit`` command; return its exit status."""
    args = _parser().parse_args(argv)
    try:
        runs = report.find_runs(args.paths)
    except FileNotFoundError as err:
        print(f"flsplit compare: {err}", file=sys.stderr)
        return 2
    png, markdown = report.write_report(runs, args.output)
    print(report.table(runs), end="")
    print(f"{len(runs)} runs: {png} and {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
