"""Check a run config as ``flwr run`` would get it, and name every problem, before any run.

``flwr run`` accepts only run-config keys that the app's ``pyproject.toml`` declares. The
SuperLink checks that, and for an undeclared key the command line shows only
``[code: 15] Invalid run configuration.``; the key's name reaches the SuperLink's log alone.
This command reads the same ``pyproject.toml`` and ``--run-config`` arguments, with Flower's own
parser, and names each undeclared key; then it validates the whole config as the ServerApp will
(every key's value, the strategy's dotted path, a plug-in's own keys) in one report:

    python -m apps.check . --run-config "strategy='mypkg.mine:MyCSL' strategy-config='clip-norm = 0.5'"

It exits 0 if the config is good, 1 if not. The data itself (``data-dir``) is read only when the
run starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from flwr.common.config import flatten_dict, get_project_config, parse_config_args

from flsplit.config import ConfigError
from strategies import parse_config


def undeclared_keys(declared: dict[str, Any], overrides: dict[str, Any]) -> list[str]:
    """One line per override key that ``pyproject.toml`` does not declare, with the fix."""
    return [
        f"  - {key}: not declared in [tool.flwr.app.config] of pyproject.toml, so flwr run refuses the run "
        "('[code: 15] Invalid run configuration.'); declare it there, or pass a plug-in's own keys "
        f"as strategy-config='{key} = ...'"
        for key in sorted(set(overrides) - set(declared))
    ]


def check(app_dir: Path, run_config: Sequence[str]) -> list[str]:
    """Every problem ``flwr run <app_dir> --run-config ...`` would meet before training; empty if none."""
    declared = flatten_dict(get_project_config(app_dir)["tool"]["flwr"]["app"].get("config", {}))
    try:
        overrides = parse_config_args(list(run_config))
    except click.ClickException as err:
        return [f"  - --run-config: {err.message}"]
    problems = undeclared_keys(declared, overrides)
    sys.path.insert(0, str(app_dir.resolve()))  # plug-ins import from the app, as in its FAB
    try:
        parse_config(declared | {k: v for k, v in overrides.items() if k in declared}, from_flower=True)
    except ConfigError as err:
        problems += str(err).splitlines()[1:]
    finally:
        sys.path.remove(str(app_dir.resolve()))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Print the problems of a run config, or that it is good; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m apps.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("app_dir", nargs="?", default=".", type=Path, help="the Flower app (its pyproject.toml); default: .")
    parser.add_argument("--run-config", "-c", action="append", default=[], help="as for flwr run (repeatable)")
    args = parser.parse_args(argv)
    problems = check(args.app_dir, args.run_config)
    if problems:
        print("invalid run config:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    print("run config ok: flwr run accepts every key and each value is valid (the data is read when the run starts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
