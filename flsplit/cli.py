"""The ``flsplit`` console command.

``flsplit compare RESULTS... [--output DIR]`` turns run folders into a comparison report
(``comparison.png`` and ``comparison.md``, see ``flsplit/report.py``).

``flsplit status RUN_DIR`` (or ``--latest [RESULTS_DIR]``) prints how a run stands and exits
with it: 0 completed, 1 failed, 2 dead, 3 running, 4 unknown (``flsplit/status.py``); a
malformed command line exits 64. It is a
command beside ``flwr run`` rather than a wrapper around it, so that ``flwr run``, with every
option Flower gives it, stays the one way to start a run, and a status can be read by anyone,
at any time, also of runs started elsewhere (a SuperLink on another machine, a sweep script).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from flsplit import report, status
from flsplit.results import results_base

#: The exit code of a malformed command line: not argparse's 2, which ``flsplit status`` means as "dead".
USAGE_ERROR = 64


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with ``USAGE_ERROR``."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flsplit", description="Tools around flsplit's run outputs.")
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
    state = commands.add_parser(
        "status",
        help="how a run stands; the exit code says it (0 completed, 1 failed, 2 dead, 3 running, 4 unknown)",
        description="Read a run folder's status.json. Exit codes: 0 completed, 1 failed, 2 dead (the ServerApp "
        "stopped without a word: its heartbeat is older than 3 intervals), 3 running, 4 unknown (no status.json).",
    )
    state.add_argument("run_dir", nargs="?", help="the run folder (<results-dir>/<run-name>)")
    state.add_argument(
        "--latest",
        nargs="?",
        const="",
        metavar="RESULTS_DIR",
        help="the run started last in RESULTS_DIR (default: $FLSPLIT_RESULTS_DIR, else ~/flsplit-results)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flsplit`` command; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "status":
        return _status(parser, args)
    try:
        runs = report.find_runs(args.paths)
    except FileNotFoundError as err:
        print(f"flsplit compare: {err}", file=sys.stderr)
        return 2
    png, markdown = report.write_report(runs, args.output)
    print(report.table(runs), end="")
    print(f"{len(runs)} runs: {png} and {markdown}")
    return 0


def _status(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Print the run's state and its folder; return the state's exit code."""
    if (args.run_dir is None) == (args.latest is None):
        parser.error("status: name a run folder or --latest [RESULTS_DIR], one of the two")
    try:
        run_dir = Path(args.run_dir) if args.run_dir else status.latest_run(Path(args.latest) if args.latest else results_base())
    except (FileNotFoundError, ValueError) as err:
        print(f"flsplit status: {err}", file=sys.stderr)
        return status.EXIT_CODES["unknown"]
    found = status.read_status(run_dir)
    print(f"{run_dir.resolve()}: {found.describe()}")
    return found.exit_code


if __name__ == "__main__":
    sys.exit(main())

