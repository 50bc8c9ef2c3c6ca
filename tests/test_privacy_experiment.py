"""experiments/privacy.py: every entry is a valid run, and a defence is held against its undefended twin."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments import privacy
from strategies import get_strategy, parse_config

ARGS = argparse.Namespace(dataset="cifar10", data_dir="/data", rounds=4, max_batches=100)


def _run(accuracy: float, **leak: float) -> dict:
    """A run's kept results: its rounds and the summary of the round-4 attack."""
    found = {"white_psnr": 18.0, "white_ssim": 0.5, "white_mse": 0.02, "probe_accuracy": 0.6, "centroid_accuracy": 0.5, "dcor": 0.9} | leak
    return {"rounds": [{"round": 4, "test_accuracy": accuracy}], "leak": {"4": found}}


def test_every_entry_is_a_valid_run_config_keeping_the_rounds_it_attacks() -> None:
    for name, entry in privacy.ENTRIES.items():
        # Execute
        config = parse_config(privacy.run_keys(entry, 1, ARGS))
        # Assert: the strategy, cut and defence asked for; the attacked rounds' checkpoints kept
        assert config.strategy == entry["strategy"] and config.seed == 1 and config.data_seed == 0, name
        assert all(config.keeps_round(r) for r in privacy.attacked_rounds(entry, 4)), name
        topology = get_strategy(config.strategy).topology
        assert (topology == "u-shaped") == (entry["grid"] == "u-shaped"), name
        if entry["defence"]:
            assert entry["twin"] in privacy.ENTRIES and not privacy.ENTRIES[entry["twin"]]["defence"], name
    assert privacy.attacked_rounds(privacy.ENTRIES["csl-u-s"], 4) == [1, 4]
    assert privacy.attacked_rounds(privacy.ENTRIES["dsl-m"], 4) == [4]


def test_a_defence_meets_a_bar_only_within_three_points_of_its_twin() -> None:
    # Prepare: the undefended CSL at 60 %, three noise settings against it, same seed
    results = {
        "csl-s": {"0": _run(0.60)},
        "csl-s-activation-noise-0.1": {"0": _run(0.59, white_mse=0.25)},  # 10x the MSE, 1 point: meets
        "csl-s-activation-noise-0.3": {"0": _run(0.55, white_mse=0.25, probe_accuracy=0.2)},  # 5 points: does not
        "csl-s-activation-noise-1": {"0": _run(0.595, white_mse=0.03)},  # cheap, but reveals as much: does not
    }
    # Execute
    rows = {row["entry"]: row for row in privacy.summary(results, 4)}
    # Assert
    assert rows["csl-s"]["defence"] == "none" and "meets a bar" not in rows["csl-s"]
    assert (rows["csl-s-activation-noise-0.1"]["accuracy cost (points)"], rows["csl-s-activation-noise-0.1"]["meets a bar"]) == (1.0, "yes")
    assert rows["csl-s-activation-noise-0.1"]["MSE × undefended"] == 12.5
    assert (rows["csl-s-activation-noise-0.3"]["accuracy cost (points)"], rows["csl-s-activation-noise-0.3"]["meets a bar"]) == (5.0, "no")
    assert rows["csl-s-activation-noise-1"]["meets a bar"] == "no"


def test_partial_results_say_so_and_a_u_shaped_row_gives_both_rounds_auc(tmp_path: Path) -> None:
    # Prepare: one U-shaped run attacked at rounds 1 and 4, nothing else of the planned grid
    run = _run(0.5, direction_auc=0.7, norm_auc_best=0.8)
    run["leak"]["1"] = run["leak"]["4"] | {"direction_auc": 0.99}
    settings = {"rounds": 4, "grids": ["u-shaped"], "seeds": [0]}
    # Execute
    text = privacy.write_outputs({"csl-u-s": {"0": run}}, settings, tmp_path)
    # Assert
    assert "**PARTIAL**: 1 of 6 planned runs attacked" in text
    (row,) = privacy.summary({"csl-u-s": {"0": run}}, 4)
    assert row["direction AUC, round 1"] == "0.990" and row["direction AUC, round 4"] == "0.700"
    assert json.loads((tmp_path / "privacy.json").read_text())["entries"]["csl-u-s"]["0"]["leak"]["1"]["direction_auc"] == 0.99
    assert (tmp_path / "privacy.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "privacy.csv").exists()
