"""End to end through ``flwr run``: a grayscale ImageFolder, MobileNetV3-Small, and a plug-in network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flsplit.launcher import SuperLink, run_config_text
from flsplit.results import read_metrics
from tests.conftest import write_image_folder

pytestmark = pytest.mark.slow  # starts real Flower processes (SuperLink, simulation, flwr run)

FLOAT = 4


def _samples_of(activation_bytes: int, per_sample: tuple[int, ...]) -> int:
    """How many samples' activations of this per-sample shape the bytes hold (framing allowed)."""
    size = FLOAT
    for n in per_sample:
        size *= n
    samples = activation_bytes // size
    assert activation_bytes - samples * size < 8192, f"{activation_bytes} bytes are no whole number of {per_sample} activations"
    return samples


def _run(link: SuperLink, results: Path, name: str, **overrides: object) -> list[dict]:
    config = {
        "num-server-rounds": 2, "max-batches": 2, "batch-size": 16, "eval-samples": 30,
        "results-dir": str(results), "run-name": name,
    } | overrides
    done = link.run(run_config_text(config))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    path = results / name / "metrics.jsonl"
    assert path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return read_metrics(path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """28x28 grayscale, ten classes: 80 train and 30 test images."""
    return write_image_folder(tmp_path_factory.mktemp("data") / "digits", {"train": 80, "test": 30})


def test_grayscale_28x28_image_folder_trains_with_dsl(superlink: SuperLink, digits: Path, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "digits", strategy="dsl", model="resnet20", dataset="imagefolder", **{"data-dir": str(digits)})
    # Assert: resnet20 cut s on 1x28x28 sends 16x28x28 floats per sample, at most 2 clients x 2 batches x 16
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["failed_clients"] == [] and r["bytes_down"] == 0
        assert 16 <= _samples_of(r["bytes_up_activations"], (16, 28, 28)) <= 2 * 2 * 16
        assert 0.0 <= r["test_accuracy"] <= 1.0
    config = json.loads((tmp_path / "digits" / "config.json").read_text())
    assert config["dataset"] == "imagefolder" and config["image-size"] == 0


def test_mobilenet_v3_small_trains_with_csl(superlink: SuperLink, tmp_path: Path) -> None:
    # Execute
    rounds = _run(superlink, tmp_path, "mobilenet", strategy="csl", model="mobilenet_v3_small", dataset="synthetic", **{"batch-size": 8})
    # Assert: cut s is after features.3, 24x16x16 per 32x32 image; every activation gets its gradient back
    for r in rounds:
        assert r["failed_clients"] == []
        assert _samples_of(r["bytes_up_activations"], (24, 16, 16)) == 2 * 2 * 8
        assert abs(r["bytes_down_gradients"] - r["bytes_up_activations"]) < 64 * 4


def test_plugin_network_trains_on_the_grayscale_folder(superlink: SuperLink, digits: Path, tmp_path: Path) -> None:
    # Execute
    rounds = _run(
        superlink, tmp_path, "plugin", strategy="dsl", model="examples.small_cnn:small_cnn", cut="conv2",
        dataset="imagefolder", **{"data-dir": str(digits)},
    )
    # Assert: after conv2, 32 x 7 x 7 per 28x28 image
    for r in rounds:
        assert r["failed_clients"] == []
        assert 16 <= _samples_of(r["bytes_up_activations"], (32, 7, 7)) <= 2 * 2 * 16
    config = json.loads((tmp_path / "plugin" / "config.json").read_text())
    assert config["model"] == "examples.small_cnn:small_cnn" and config["cut_blocks"] == 1
