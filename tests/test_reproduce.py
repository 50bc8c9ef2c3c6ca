"""The reproduction driver's grid, presets, results reading, claims and figures (no training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from experiments import reproduce
from experiments.repro_claims import compare, gap_per_epoch, write_claims
from experiments.repro_figures import write_figures
from experiments.repro_results import load_runs, run_is_complete
from flsplit.launcher import run_config_text
from strategies import parse_config

ROUNDS = 3


def _fake_run(root: Path, strategy: str, cut: str, clients: int) -> None:
    """A finished run with round metrics of the shape the ServerApp writes."""
    folder = root / f"cifar10-n{clients}-cut{cut}-{strategy}"
    folder.mkdir(parents=True)
    config = {"strategy": strategy, "cut": cut, "num_clients": clients, "dataset": "cifar10", "model": "resnet20", "aux-head": "pooled", "lr": 0.05, "batch-size": 128, "num-server-rounds": ROUNDS}
    (folder / "config.json").write_text(json.dumps(config))
    lines = []
    for r in range(1, ROUNDS + 1):
        up = 1e9 * clients
        lines.append(
            {
                "round": r,
                "test_accuracy": 0.3 + 0.1 * r + (0.01 if strategy == "csl" else 0.0),
                "aux_accuracy": 0.25 + 0.1 * r if strategy == "dsl" else None,
                "bytes_up": up,
                "bytes_down": up if strategy == "csl" else 0,
                "train_samples": 10_000,
                "client_fwd_s": 4.0, "client_bwd_s": 6.0, "server_s": 8.0, "comm_s": 2.0 if strategy == "csl" else 1.0,
                "round_s": 20.0 if strategy == "csl" else 25.0,
                "client_peak_mb": (200.0 if strategy == "csl" else 150.0) if r == 1 else None,
                "client_saved_mb": 120.0 if r == 1 else None,
                "server_peak_mb": 100.0 if r == 1 else None,
                "server_saved_mb": 60.0 if r == 1 else None,
            }
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))


@pytest.fixture
def finished_grid(tmp_path: Path) -> Path:
    runs = tmp_path / "out" / "runs"
    for strategy in ("csl", "dsl"):
        for cut in ("s", "d"):
            for clients in (1, 5):
                _fake_run(runs, strategy, cut, clients)
    return tmp_path / "out"


@pytest.mark.parametrize(("preset", "runs_per_dataset"), [("cpu", 18), ("paper", 18), ("cpu-long", 4)])
def test_every_preset_run_config_is_valid_for_every_grid_point(preset: str, runs_per_dataset: int, tmp_path: Path) -> None:
    # Prepare
    loaded = reproduce.load_preset(preset)
    # Execute
    points = reproduce.grid_points(loaded["grid"])
    configs = [reproduce.run_config(loaded, p, "/data", tmp_path) for p in points]
    # Assert
    assert len(points) == len({p.name for p in points}) == runs_per_dataset * len(loaded["grid"]["datasets"])
    for config in configs:
        parse_config(config)


def test_cpu_preset_splits_samples_per_round_over_the_clients(tmp_path: Path) -> None:
    # Prepare
    preset = reproduce.load_preset("cpu")
    # Execute
    batches = {n: reproduce.run_config(preset, reproduce.GridPoint("cifar10", n, "s", "dsl"), "", tmp_path)["max-batches"] for n in (1, 5, 10)}
    # Assert: N clients together see samples-per-round images per round
    assert batches == {1: 62, 5: 12, 10: 6}


def test_run_config_text_round_trips_through_toml() -> None:
    # Prepare
    import tomllib

    config = {"strategy": "dsl", "lr": 0.05, "aggregate-clients": False, "max-batches": 8}
    # Execute
    text = run_config_text(config)
    # Assert
    assert tomllib.loads(text.replace(" ", "\n")) == config


def test_a_run_counts_as_done_only_with_all_its_rounds(finished_grid: Path) -> None:
    # Prepare
    run = finished_grid / "runs" / "cifar10-n1-cuts-csl"
    # Execute / Assert
    assert run_is_complete(run, ROUNDS)
    assert not run_is_complete(run, ROUNDS + 1)
    assert not run_is_complete(finished_grid / "runs" / "missing", 1)


def test_grid_status_names_every_unfinished_run_and_its_scratch_progress(finished_grid: Path, tmp_path: Path) -> None:
    # Prepare
    preset = {"grid": {"strategies": ["csl", "dsl"], "cuts": ["s"], "clients": [1, 5], "datasets": ["cifar10"]}, "run-config": {"num-server-rounds": ROUNDS}}
    scratch = tmp_path / "scratch"
    complete = reproduce.grid_status(preset, finished_grid, scratch)
    for name in ("cifar10-n5-cuts-csl", "cifar10-n5-cuts-dsl"):
        (finished_grid / "runs" / name / "metrics.jsonl").unlink()
    in_progress = scratch / "cifar10-n5-cuts-csl"
    in_progress.mkdir(parents=True)
    (in_progress / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2}\n')
    # Execute
    partial = reproduce.grid_status(preset, finished_grid, scratch)
    # Assert
    assert complete == "COMPLETE: all 4 runs."
    assert partial == (
        "PARTIAL: 2 of 4 runs finished; not finished: "
        f"cifar10-n5-cuts-csl (2 of {ROUNDS} rounds), cifar10-n5-cuts-dsl (0 of {ROUNDS} rounds)."
    )


def test_claims_compare_dsl_with_csl_from_the_recorded_numbers(finished_grid: Path) -> None:
    # Prepare
    runs = load_runs(finished_grid / "runs")
    # Execute
    rows = compare(runs)
    # Assert
    assert len(rows) == 4
    row = rows[0]
    assert (row["N"], row["cut"]) == (1, "s")
    assert row["comm_ratio"] == pytest.approx(0.5)
    assert row["accuracy_gap_pts"] == pytest.approx(-1.0)
    assert row["client_memory_ratio"] == pytest.approx(0.75)
    assert row["time_ratio"] == pytest.approx(1.25)
    assert row["csl_gb_per_client"] == pytest.approx(2 * ROUNDS)


def test_gap_per_epoch_follows_every_round_and_lists_another_preset_beside(finished_grid: Path, tmp_path: Path) -> None:
    # Prepare
    runs = load_runs(finished_grid / "runs")
    other = tmp_path / "other"
    _fake_run(other, "csl", "s", 5)
    _fake_run(other, "dsl", "s", 5)
    _fake_run(other, "csl", "m", 5)
    _fake_run(other, "dsl", "m", 5)
    # Execute
    rows = gap_per_epoch(runs, "long")
    write_claims(runs, finished_grid, beside={"short": load_runs(other)})
    written = json.loads((finished_grid / "claims.json").read_text())["per_epoch"]
    # Assert
    assert len(rows) == 4 * ROUNDS
    first = rows[0]
    assert (first["N"], first["cut"], first["epoch"]) == (1, "s", 0.2)
    assert first["gap_pts"] == pytest.approx(-1.0)
    assert first["server_minus_aux_pts"] == pytest.approx(5.0)
    assert [r["epoch"] for r in rows[:ROUNDS]] == [0.2, 0.4, 0.6]
    beside = [r for r in written if r["preset"] == "short"]
    assert {(r["N"], r["cut"]) for r in beside} == {(5, "s")}  # cut m is not in this grid
    assert len(written) == 4 * ROUNDS + ROUNDS
    assert "DSL - CSL after every round" in (finished_grid / "claims.md").read_text()


def test_plot_only_draws_four_figures_and_the_claims_without_training(finished_grid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setattr(sys, "argv", ["reproduce", "--preset", "cpu", "--plot-only", "--out", str(finished_grid)])
    monkeypatch.setattr(reproduce, "run_grid", lambda *a, **k: pytest.fail("--plot-only must not train"))
    # Execute
    reproduce.main()
    # Assert
    pngs = sorted(p.name for p in finished_grid.glob("*.png"))
    assert pngs == [f"{name}_cifar10.png" for name in ("fig4_accuracy", "fig5_communication", "fig6_memory", "fig7_time")]
    assert all((finished_grid / p).stat().st_size > 20_000 for p in pngs)
    claims = json.loads((finished_grid / "claims.json").read_text())
    assert {c["claim"] for c in claims["summary"]} >= {"accuracy_gap_pts", "comm_ratio", "time_ratio"}
    assert claims["status"].startswith("PARTIAL: ")  # the fixture holds 8 short runs of the cpu preset's 18
    assert (finished_grid / "claims.md").read_text().startswith(claims["status"] + "\n")


def test_write_figures_makes_one_file_per_figure_and_dataset(finished_grid: Path, tmp_path: Path) -> None:
    # Prepare
    runs = load_runs(finished_grid / "runs")
    # Execute
    paths = write_figures(runs, tmp_path / "figs", "test")
    write_claims(runs, tmp_path / "figs")
    # Assert
    assert len(paths) == 4 and all(p.exists() for p in paths)
    assert (tmp_path / "figs" / "claims.md").read_text().count("|") > 20


def test_time_per_epoch_comes_from_the_fastest_round_after_the_first(finished_grid: Path) -> None:
    # Prepare: round 3 of one run was not slowed down by anything else on the machine
    path = finished_grid / "runs" / "cifar10-n1-cuts-dsl" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["round_s"], rows[2]["round_s"], rows[2]["comm_s"] = 1.0, 10.0, 0.5
    path.write_text("".join(json.dumps(m) + "\n" for m in rows))
    # Execute
    run = next(r for r in load_runs(finished_grid / "runs") if (r.strategy, r.clients, r.cut) == ("dsl", 1, "s"))
    seconds = run.seconds_per_epoch()
    # Assert: round 1 is never used; 10,000 samples per round = 1/5 of an epoch
    assert seconds["round_s"] == pytest.approx(50.0)
    assert seconds["comm_s"] == pytest.approx(2.5)


def test_set_overrides_a_run_config_key_and_names_the_variant() -> None:
    # Execute
    preset = reproduce.with_overrides(reproduce.load_preset("cpu-long-n5-dsl-linear"), ["lr=0.003", "seed=2"])
    # Assert
    assert preset["run-config"]["lr"] == 0.003 and preset["run-config"]["seed"] == 2
    assert preset["name"] == "cpu-long-n5-dsl-linear-lr0.003-seed2"
