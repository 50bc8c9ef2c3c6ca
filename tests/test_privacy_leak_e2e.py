"""keep-rounds through a real ``flwr run``, then ``flsplit leak`` on the kept round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsplit import checkpoint, cli
from flsplit.launcher import SuperLink
from tests.test_privacy_leak import TINY

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, SuperNodes, flwr run)


def test_a_kept_round_survives_the_run_and_flsplit_leak_attacks_it(superlink: SuperLink, tmp_path: Path) -> None:
    # Prepare
    config = {
        "strategy": "'csl'", "dataset": "'synthetic'", "model": "'resnet20'", "cut": 1, "num-server-rounds": 3, "max-batches": 2,
        "batch-size": 16, "eval-samples": 48, "keep-rounds": "'1'", "results-dir": f"'{tmp_path}'", "run-name": "'kept'",
    }
    done = superlink.run(" ".join(f"{k}={v}" for k, v in config.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "kept"

    # Execute
    code = cli.main(["leak", str(run_dir), "--round", "1", *TINY])

    # Assert: round 1 kept by both parties, round 2 and 3 by the clients' usual pruning
    assert code == 0
    assert sorted(p.parent.name for p in (run_dir / "clients").glob("round-*/partition-0.pt")) == ["round-1", "round-2", "round-3"]
    assert (run_dir / "server" / "round-1.pt").exists() and not (run_dir / "server" / "round-2.pt").exists()
    result = json.loads((run_dir / "leak.json").read_text())
    assert result["round"] == 1 and result["strategy"] == "csl"
    assert (run_dir / "leak.md").exists() and (run_dir / "leak_reconstruction.png").exists()


def test_a_u_shaped_run_records_the_gradients_of_its_kept_round_and_flsplit_leak_scores_them(superlink: SuperLink, tmp_path: Path) -> None:
    # Prepare: csl-u on 2 clients, 2 rounds of 3 batches; round 2 kept, 2 batches of dL/dz2 per client recorded
    config = {
        "strategy": "'csl-u'", "dataset": "'synthetic'", "model": "'resnet20'", "cut": 1, "num-server-rounds": 2, "max-batches": 3,
        "batch-size": 16, "eval-samples": 48, "keep-rounds": "'2'", "record-gradient-batches": 2, "results-dir": f"'{tmp_path}'",
        "run-name": "'kept-u'",
    }
    done = superlink.run(" ".join(f"{k}={v}" for k, v in config.items()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "kept-u"

    # Execute
    code = cli.main(["leak", str(run_dir), "--round", "2", *TINY])

    # Assert: one file per client for the kept round alone, each bounded to 2 batches of 16
    assert code == 0
    files = sorted(p.name for p in (run_dir / "gradients").iterdir())
    assert files == ["round-2-client-0.pt", "round-2-client-1.pt"]
    assert all(len(checkpoint.load(run_dir / "gradients" / name)["gradients"]) == 32 for name in files)
    found = json.loads((run_dir / "leak.json").read_text())["gradient_label_leakage"]
    assert found["measured"] and found["samples"] == 32
    # round 2's first two batches: the client's steps 3 and 4 (round 1 took steps 0 to 2)
    assert found["steps"] == [3, 4]
    for attack in ("norm", "direction"):
        aucs = [found[attack]["mean"], found[attack]["best"], *found[attack]["per_class"].values()]
        assert all(0.0 <= auc <= 1.0 for auc in aucs)
