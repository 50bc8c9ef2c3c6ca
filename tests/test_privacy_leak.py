"""flsplit leak: attacks a run's kept checkpoints and writes every file, with finite numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from flsplit import cli
from flsplit.ledger import Ledger
from flsplit.results import ResultsWriter
from tests.halves import drive_round, make_client, make_config
from strategies import get_strategy
from apps import client_state, server_app

#: Small enough for a unit test: the synthetic test split has 256 images.
TINY = ["--aux-size", "50", "--target-size", "16", "--decoder-epochs", "2", "--decoder-width", "8", "--surrogate-epochs", "1", "--probe-epochs", "20"]


def _numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DSL run on synthetic data after one round of two batches, checkpointed as the apps do, then attacked."""
    tmp_path = tmp_path_factory.mktemp("leak")
    config = make_config(**{"cut": 1, "keep-rounds": "1", "run-name": "tiny"})
    strategy = get_strategy("dsl")
    server = server_app.build_server(config, strategy)
    client = make_client(config, strategy, steps=2)
    drive_round(strategy.client(config), server, client)
    writer = ResultsWriter(str(tmp_path), "tiny")
    writer.write_config(config.as_run_config() | {"num_clients": 4})
    writer.append({"round": 1, "test_accuracy": 0.25})
    server_app._checkpoint(writer, server, Ledger(), None, 1, [])
    context = _context(writer.dir / "clients")
    client_state.write_checkpoint(context, config, client, 1)
    assert cli.main(["leak", str(writer.dir), *TINY]) == 0
    return writer.dir


def _context(clients_dir: Path):
    from flwr.app import ConfigRecord, Context, RecordDict

    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 4}, state=RecordDict(), run_config={})
    context.state[client_state.RUN] = ConfigRecord({"clients_dir": str(clients_dir)})
    return context


def test_flsplit_leak_writes_json_markdown_and_grid_with_finite_numbers(trained_run: Path) -> None:
    # Prepare, Execute: trained_run ran flsplit leak on round 1

    # Assert
    result = json.loads((trained_run / "leak.json").read_text())
    assert result["round"] == 1 and result["test_accuracy"] == 0.25
    assert set(result["reconstruction"]) == {"white-box", "black-box", "baseline"}
    assert set(result["reconstruction"]["white-box"]) == {"train", "test"}
    assert result["label_inference"]["white-box"]["train"]["chance"] > 0
    numbers = _numbers({k: result[k] for k in ("reconstruction", "label_inference", "dcor")})
    assert len(numbers) > 20 and all(math.isfinite(n) for n in numbers)
    assert "50 test-split images, 5 per class" in result["data"]["auxiliary"]
    markdown = (trained_run / "leak.md").read_text()
    assert "white-box" in markdown and "black-box" in markdown and "dCor" in markdown
    assert (trained_run / "leak_reconstruction.png").read_bytes()[:4] == b"\x89PNG"


def test_flsplit_leak_plots_accuracy_against_leakage_from_earlier_results(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    plot = tmp_path / "leakage.png"

    # Execute
    code = cli.main(["leak", str(trained_run), str(trained_run), "--reuse", "--plot", str(plot)])

    # Assert
    assert code == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.count("white-box PSNR") == 2


def test_flsplit_leak_names_the_kept_rounds_when_asked_for_another(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: trained_run keeps round 1 only

    # Execute
    code = cli.main(["leak", str(trained_run), "--round", "3", *TINY])

    # Assert
    assert code == 2
    assert "keeps rounds [1]" in capsys.readouterr().err


def test_flsplit_leak_refuses_a_u_shaped_run_naming_its_topology(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: a U-shaped run's folder (its server holds a middle, not a top)
    (tmp_path / "config.json").write_text(json.dumps({"strategy": "csl-u", "topology": "u-shaped"}))

    # Execute
    code = cli.main(["leak", str(tmp_path), *TINY])

    # Assert
    assert code == 2
    assert "a u-shaped run (strategy 'csl-u')" in capsys.readouterr().err


def test_flsplit_leak_gives_the_same_numbers_when_run_again(trained_run: Path) -> None:
    # Prepare
    first = json.loads((trained_run / "leak.json").read_text())

    # Execute
    assert cli.main(["leak", str(trained_run), *TINY]) == 0

    # Assert
    again = json.loads((trained_run / "leak.json").read_text())
    assert again["reconstruction"] == first["reconstruction"]
    assert again["label_inference"] == first["label_inference"]
    assert again["dcor"] == first["dcor"]
