"""The ``flsplit`` console command.

``flsplit compare RESULTS... [--output DIR]`` turns run folders into a comparison report
(``comparison.png`` and ``comparison.md``, see ``flsplit/report.py``).

``flsplit leak RUN_DIR... [--round N] [--plot PNG]`` runs the privacy attacks on a run's kept
checkpoints and writes ``leak.json``, ``leak.md`` and a reconstruction grid into the run folder;
over several runs ``--plot`` draws accuracy against leakage (``flsplit/privacy/report.py``).

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
    _add_leak(commands)
    return parser


def _add_leak(commands: argparse._SubParsersAction) -> None:
    leak = commands.add_parser(
        "leak",
        help="attack a run's kept checkpoints: input reconstruction, label inference, dCor",
        description="What an honest-but-curious server learns from a run's activations (docs/privacy.md). Writes "
        "leak.json, leak.md and leak_reconstruction.png into each run folder.",
    )
    leak.add_argument("run_dirs", nargs="+", help="run folders (<results-dir>/<run-name>) with client and server checkpoints")
    leak.add_argument("--round", type=int, default=None, help="the round to attack (default: the last one on disk; keep-rounds keeps others)")
    leak.add_argument("--partition", type=int, default=0, help="the client whose slice and images are attacked (default: 0)")
    leak.add_argument("--aux-size", type=int, default=1000, help="class-balanced auxiliary images from the test split (default: 1000)")
    leak.add_argument("--target-size", type=int, default=500, help="attacked images per target set (default: 500)")
    leak.add_argument("--decoder-epochs", type=int, default=20, help="epochs of the inversion network (default: 20)")
    leak.add_argument("--decoder-width", type=int, default=64, help="channels of the inversion network (default: 64)")
    leak.add_argument("--surrogate-epochs", type=int, default=10, help="epochs of the black-box surrogate bottom (default: 10)")
    leak.add_argument("--probe-epochs", type=int, default=200, help="full-batch epochs of the linear label probe (default: 200)")
    leak.add_argument("--shots", type=int, default=10, help="labelled samples per class for the nearest centroid (default: 10)")
    leak.add_argument("--seed", type=int, default=0)
    leak.add_argument("--data-dir", default=None, help="where the run's dataset is here, if not at its recorded data-dir")
    leak.add_argument("--plot", default=None, metavar="PNG", help="also plot test accuracy against leakage over the runs")
    leak.add_argument("--reuse", action="store_true", help="read each run's existing leak.json instead of attacking again")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flsplit`` command; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "status":
        return _status(parser, args)
    if args.command == "leak":
        return _leak(args)
    try:
        runs = report.find_runs(args.paths)
    except FileNotFoundError as err:
        print(f"flsplit compare: {err}", file=sys.stderr)
        return 2
    png, markdown = report.write_report(runs, args.output)
    print(report.table(runs), end="")
    print(f"{len(runs)} runs: {png} and {markdown}")
    return 0


def _leak(args: argparse.Namespace) -> int:
    """Attack every run (or read its leak.json), print where the files are, and plot if asked."""
    try:
        from flsplit.privacy import report as privacy  # torchmetrics: the optional 'privacy' extra
    except ImportError as err:
        print(f"flsplit leak: {err}; install it with pip install 'flsplit[privacy]'", file=sys.stderr)
        return 2
    names = ("round", "partition", "aux_size", "target_size", "decoder_epochs", "decoder_width", "surrogate_epochs", "probe_epochs", "shots", "seed", "data_dir")
    options = privacy.LeakOptions(**{("round_number" if name == "round" else name): getattr(args, name) for name in names})
    results = []
    for run_dir in args.run_dirs:
        try:
            result = privacy.read_leak(run_dir) if args.reuse else privacy.leak(run_dir, options)
        except (FileNotFoundError, ValueError) as err:
            print(f"flsplit leak: {err}", file=sys.stderr)
            return 2
        results.append(result)
        print(f"{run_dir}: {privacy.leak_summary(result)}; {Path(run_dir) / privacy.LEAK_MD}")
    if args.plot:
        print(f"{len(results)} runs: {privacy.plot_leakage(results, args.plot)}")
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

