"""The seven bad inputs of a user's first hour, each through ``flwr run``: what ``status.json`` and ``flsplit status`` say.

Unknown strategy, bad cut, missing data-dir, truncated archive (half of the CIFAR-10 archive in
``--data-dir``), ``lr=-1``, ``batch-size=0`` and an unimportable model, on a simulation SuperLink
started here and stopped afterwards. Prints, per input, ``flwr run``'s and ``flsplit status``'s exit
codes and the status's state and error.

    python -m experiments.bad_inputs --data-dir ../shared/data      # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from flsplit.launcher import SuperLink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with cifar10-jpeg.tar.gz (its first half becomes the truncated archive)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base, truncated = tmp / "results", tmp / "truncated"
        truncated.mkdir()
        archive = (Path(args.data_dir) / "cifar10-jpeg.tar.gz").read_bytes()
        (truncated / "cifar10-jpeg.tar.gz").write_bytes(archive[: len(archive) // 2])
        cases = {
            "unknown strategy": "strategy='magic'",
            "bad cut": "cut='zz'",
            "missing data-dir": f"data-dir='{tmp}/nowhere'",
            "truncated archive": f"dataset='imagefolder' data-dir='{truncated}'",
            "lr=-1": "lr=-1.0",
            "batch-size=0": "batch-size=0",
            "unimportable model": "model='nope.module:build'",
        }
        with SuperLink(tmp / "home", env={"FLSPLIT_RESULTS_DIR": str(base)}) as link:
            for i, (name, override) in enumerate(cases.items()):
                done = link.run(f"{override} results-dir='{base}' run-name='bad{i}' num-server-rounds=1 max-batches=2")
                folder = base / f"bad{i}"
                if not (folder / "status.json").exists():  # the config could not be read: keyed by Flower's run id
                    folder = max(base.glob("flower-run-*"), key=lambda p: p.stat().st_mtime)
                status = subprocess.run([sys.executable, "-m", "flsplit.cli", "status", str(folder)], capture_output=True, text=True, check=False)
                found = json.loads((folder / "status.json").read_text())
                print(f"{name} ({override}): flwr run exit {done.returncode}, flsplit status exit {status.returncode}, "
                      f"{found['state']}: {found.get('error')}", flush=True)


if __name__ == "__main__":
    main()
