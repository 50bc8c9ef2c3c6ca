"""flsplit leak: attacks a run's kept checkpoints and writes every file, with finite numbers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from flsplit import checkpoint, cli
from flsplit.ledger import Ledger
from flsplit.privacy.gradient_leakage import direction_attack, norm_attack
from flsplit.privacy.gradient_record import gradient_record_path
from flsplit.results import ResultsWriter
from tests.halves import ThroughClientApp, drive_round, make_client, make_config
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


@pytest.fixture(scope="module")
def u_shaped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A csl-u run after one kept round of three batches: checkpoints, and the dL/dz2 its server recorded of two."""
    return _attacked_u_shaped_run(tmp_path_factory.mktemp("leak-u"))


def _attacked_u_shaped_run(tmp_path: Path, **keys: object) -> Path:
    """``u_shaped_run`` with run-config ``keys`` added, attacked by ``flsplit leak``."""
    config = make_config(**{"strategy": "csl-u", "cut": 1, "keep-rounds": "1", "record-gradient-batches": 2, "run-name": "tiny-u"} | keys)
    strategy = get_strategy("csl-u")
    writer = ResultsWriter(str(tmp_path), "tiny-u")
    writer.write_config(config.as_run_config() | {"num_clients": 4, "topology": "u-shaped"})
    server = server_app.build_server(config, strategy)
    server.attach_run(writer.dir, {0: 0})
    context = _context(writer.dir / "clients")
    client = make_client(config, strategy, steps=3)
    client.loader = client_state.client_loader(context, config)  # partition 0 of 4, as a ClientApp reads it
    drive_round(ThroughClientApp(strategy.client(config)), server, client)  # the ClientApp's path, with its defences
    server.end_round(1, None)
    server_app._checkpoint(writer, server, Ledger(), None, 1, [])
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


def test_flsplit_leak_on_a_u_shaped_run_reports_the_leak_auc_of_the_gradients_the_server_received(u_shaped_run: Path) -> None:
    # Prepare, Execute: u_shaped_run ran flsplit leak on round 1

    # Assert: both attacks, per class and mean, in [0, 1], on the 2 recorded batches of 16
    result = json.loads((u_shaped_run / "leak.json").read_text())
    found = result["gradient_label_leakage"]
    assert result["topology"] == "u-shaped" and found["measured"]
    assert found["attacker"] == "honest-but-curious server, gradients it received" and found["tensor"] == "dL/dz2"
    assert found["samples"] == 32 and found["steps"] == [0, 1] and found["file"] == "gradients/round-1-client-0.pt"
    for attack in ("norm", "direction"):
        aucs = [found[attack]["mean"], found[attack]["best"], *found[attack]["per_class"].values()]
        assert len(aucs) > 3 and all(0.0 <= auc <= 1.0 for auc in aucs)
    # the sanity check of Li et al.: early in training the direction attack recovers nearly every label
    assert found["direction"]["mean"] > 0.9
    assert set(found["direction"]["references"]) == set(found["direction"]["per_class"])
    # the attacks on z1 that need no classifier of z are there; the black-box ones are left out, with why
    assert set(result["reconstruction"]) == {"white-box", "baseline"} and set(result["label_inference"]) == {"white-box"}
    assert "no classifier" in result["left_out"][0] and "black-box" not in result["knowledge"]
    assert math.isfinite(result["dcor"]["train"]) and (u_shaped_run / "leak_reconstruction.png").exists()
    markdown = (u_shaped_run / "leak.md").read_text()
    assert "honest-but-curious server, gradients it received" in markdown and "reference samples" in markdown


def test_gradient_noise_brings_the_direction_attack_to_chance_and_the_report_names_it(
    u_shaped_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute: the same run with noise of 30 std(g) on every dL/dz2 its client returns
    noisy_run = _attacked_u_shaped_run(tmp_path, **{"gradient-noise": 30.0})
    # Assert: the clean run's direction attack recovers the labels, the noisy one's is near chance
    clean, noisy = (json.loads((run / "leak.json").read_text()) for run in (u_shaped_run, noisy_run))
    assert clean["defences"] == {} and noisy["defences"] == {"gradient-noise": 30.0}
    assert clean["gradient_label_leakage"]["direction"]["mean"] > 0.9
    assert abs(noisy["gradient_label_leakage"]["direction"]["mean"] - 0.5) < 0.15
    assert "defences: gradient-noise 30.0" in (noisy_run / "leak.md").read_text()
    printed = capsys.readouterr().out  # flsplit leak's line for the run
    assert "defences: gradient-noise 30.0" in printed and "dL/dz2 leak AUC: direction" in printed


def test_the_leak_auc_is_scored_against_the_labels_of_the_batches_the_client_trained_on(u_shaped_run: Path) -> None:
    # Prepare: the labels of the client's first two batches of round 1, as the client drew them
    config = make_config(**{"strategy": "csl-u", "cut": 1})
    loader = client_state.client_loader(_context(u_shaped_run / "clients"), config)
    labels = torch.cat([loader.batch(0)[1], loader.batch(1)[1]])
    recorded = checkpoint.load(gradient_record_path(u_shaped_run, 1, 0))

    # Execute
    norm, direction = norm_attack(recorded["gradients"], labels), direction_attack(recorded["gradients"], labels)

    # Assert: the same numbers, and each reference sample is of its class
    found = json.loads((u_shaped_run / "leak.json").read_text())["gradient_label_leakage"]
    assert found["norm"]["per_class"] == {str(c): v for c, v in norm.per_class.items()}
    assert found["direction"]["per_class"] == {str(c): v for c, v in direction.per_class.items()}
    references = found["direction"]["references"]
    assert {c: labels[r["index"]].item() for c, r in references.items()} == {c: int(c) for c in references}


def test_flsplit_leak_says_why_when_the_attacked_round_has_no_recorded_gradients(u_shaped_run: Path, tmp_path: Path) -> None:
    # Prepare: the same run without its gradients folder
    copy = tmp_path / "copy"
    shutil.copytree(u_shaped_run, copy, ignore=shutil.ignore_patterns("gradients"))

    # Execute
    code = cli.main(["leak", str(copy), *TINY])

    # Assert
    assert code == 0
    found = json.loads((copy / "leak.json").read_text())["gradient_label_leakage"]
    assert not found["measured"] and "keep-rounds" in found["why"]
