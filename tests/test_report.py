"""``flsplit compare``: comparison plots and table from run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsplit import cli, report
from flsplit.results import ResultsWriter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_run(
    results: Path, name: str, strategy: str, accuracies: list[float | None], up: float, down: float, evaluated: list[list[int]] | None = None
) -> Path:
    """A run folder of two clients as the ServerApp writes it, through the same writer."""
    writer = ResultsWriter(str(results), name)
    writer.write_config({"strategy": strategy, "model": "resnet20", "num-server-rounds": len(accuracies)})
    for r, accuracy in enumerate(accuracies, start=1):
        writer.append(
            {
                "round": r,
                "strategy": strategy,
                "test_accuracy": accuracy,
                "test_loss": None if accuracy is None else 2.0 - accuracy,
                "aux_accuracy": None,
                "bytes_up": up,
                "bytes_down": down,
                "round_s": 10.0,
                "eval_s": 2.0,
                "failed_clients": [],
                "num_clients": 2,
                "evaluated_clients": evaluated[r - 1] if evaluated else [0, 1],
            }
        )
    return writer.dir


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of the report's markdown table, by run name."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {row[0]: row[1:] for row in cells}


def test_compare_writes_a_plot_and_a_table_with_each_runs_totals(tmp_path: Path) -> None:
    # Prepare: two runs in one results folder
    results = tmp_path / "results"
    _write_run(results, "csl-run", "csl", [0.20, 0.35, 0.30], up=0.5e9, down=0.5e9)
    _write_run(results, "dsl-run", "dsl", [0.15, 0.25, 0.40], up=0.5e9, down=0.0)
    output = tmp_path / "report"
    # Execute
    status = cli.main(["compare", str(results), "--output", str(output)])
    # Assert
    assert status == 0
    png = output / report.PLOT
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000
    rows = _table_rows((output / report.TABLE).read_text())
    # strategy, rounds, final %, best %, GB (3 rounds x (up + down)), wall clock (3 x (10 + 2) s)
    assert rows["csl-run"] == ["csl", "3", "30", "35", "3", "36", "-"]
    assert rows["dsl-run"] == ["dsl", "3", "40", "40", "1.5", "36", "-"]


def test_rounds_that_eval_every_skipped_are_left_out_of_the_scores_and_the_plot(tmp_path: Path) -> None:
    # Prepare: eval-every 2 over 3 rounds scores rounds 2 and 3
    results = tmp_path / "results"
    _write_run(results, "skipping", "dsl", [None, 0.35, 0.30], up=0.5e9, down=0.0)
    output = tmp_path / "report"
    # Execute
    status = cli.main(["compare", str(results), "--output", str(output)])
    # Assert: final and best come from the scored rounds; traffic and time count every round
    assert status == 0 and (output / report.PLOT).stat().st_size > 10_000
    assert _table_rows((output / report.TABLE).read_text())["skipping"] == ["dsl", "3", "30", "35", "1.5", "36", "-"]


def test_rounds_scored_on_fewer_clients_are_named_in_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: client 1 failed in round 2, so rounds 2 and 3 were scored on client 0's slice only
    results = tmp_path / "results"
    _write_run(results, "after-failure", "dsl", [0.20, 0.35, 0.30], up=0.5e9, down=0.0, evaluated=[[0, 1], [0], [0]])
    # Execute
    status = cli.main(["compare", str(results), "--output", str(tmp_path / "report")])
    # Assert: on the console and in comparison.md
    assert status == 0
    assert _table_rows((tmp_path / "report" / report.TABLE).read_text())["after-failure"][-1] == "2, 3"
    assert _table_rows(capsys.readouterr().out)["after-failure"][-1] == "2, 3"


def test_run_folders_and_folders_of_runs_can_be_mixed(tmp_path: Path) -> None:
    # Prepare
    single = _write_run(tmp_path / "a", "one", "dsl", [0.1], up=1e6, down=0.0)
    _write_run(tmp_path / "b", "two", "csl", [0.2, 0.3], up=1e6, down=1e6)
    _write_run(tmp_path / "b", "three", "csl", [0.4], up=1e6, down=1e6)
    # Execute
    runs = report.find_runs([single, tmp_path / "b"])
    # Assert: the run folder itself, then the parent's runs in name order
    assert [run.name for run in runs] == ["one", "three", "two"]
    assert runs[2].cumulative_gb == pytest.approx([0.002, 0.004])
    assert runs[2].cumulative_s == pytest.approx([12.0, 24.0])


def test_compare_without_runs_fails_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a folder with a run that has a config but no finished round
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "empty-run" / "config.json").write_text(json.dumps({"strategy": "dsl"}))
    (tmp_path / "empty-run" / "metrics.jsonl").write_text("")
    # Execute
    status = cli.main(["compare", str(tmp_path), "--output", str(tmp_path / "report")])
    # Assert
    assert status == 2
    assert "no run folders" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
