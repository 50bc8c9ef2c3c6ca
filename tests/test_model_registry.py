"""Networks by name or by ``package.module:builder``, cuts by index or block name, and the built-ins."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flsplit.config import ConfigError, parse_run_config
from flsplit.models import CutPoint, block_names, build_head, build_model, cut_shape, model_names, resolve_cut
from flsplit.split import activation_shape, build_halves
from tests.halves import drive_round, make_client, make_config, make_server, next_round
from strategies import get_strategy

PLUGIN = "examples.small_cnn:small_cnn"


def test_builtins_include_the_cifar_resnets_resnet18_and_mobilenet_v3_small() -> None:
    assert {"resnet20", "resnet110", "resnet18", "mobilenet_v3_small"} <= set(model_names())


def test_a_plugin_builder_is_imported_from_its_dotted_path_and_cut_by_block_name() -> None:
    # Execute
    config = parse_run_config({"model": PLUGIN, "cut": "conv2", "dataset": "synthetic"})
    bottom, top, aux = build_halves(config)
    # Assert
    assert config.cut_blocks == 1 == resolve_cut("1", PLUGIN)
    assert bottom(torch.zeros(2, 3, 32, 32)).shape == (2, 32, 8, 8) == (2, *activation_shape(config))
    assert top(bottom(torch.zeros(2, 3, 32, 32))).shape == (2, 10)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ({"model": "vgg11"}, "unknown model 'vgg11'; choose one of"),
        ({"model": "examples.nowhere:net"}, "cannot import 'examples.nowhere:net'"),
        ({"model": "mobilenet_v3_small", "cut": "features.99"}, "its blocks are ['features.1'"),
        ({"model": "mobilenet_v3_small", "cut": 12}, "must be between 1 and 11"),
    ],
)
def test_bad_model_or_cut_names_the_key_and_the_choices(raw: dict, text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config(raw)
    key = "cut" if "cut" in raw else "model"
    assert f"- {key}:" in str(err.value) and text in str(err.value)


def test_a_builder_that_returns_no_network_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    import examples.small_cnn

    monkeypatch.setattr(examples.small_cnn, "bare", lambda n, s: nn.Sequential(nn.Flatten()), raising=False)
    # Execute / Assert
    with pytest.raises(ValueError, match="returned Sequential, not a Network"):
        build_model("examples.small_cnn:bare")


def test_a_network_that_expects_another_input_shape_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a builder that only takes 3x32x32
    import examples.small_cnn

    fixed = lambda n, s: examples.small_cnn.small_cnn(n, (3, 32, 32))  # noqa: E731
    monkeypatch.setattr(examples.small_cnn, "fixed", fixed, raising=False)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"expects inputs of shape \(3, 32, 32\) but the dataset gives \(1, 28, 28\)"):
        build_model("examples.small_cnn:fixed", 10, (1, 28, 28))


@pytest.mark.parametrize("model", ["resnet20", "resnet18", "mobilenet_v3_small", PLUGIN])
def test_grayscale_input_builds_a_one_channel_stem_and_the_cut_shape_from_a_dry_run(model: str) -> None:
    # Prepare
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    # Execute
    shape = cut_shape(1, model, 10, (1, 28, 28))
    net = build_model(model, 10, (1, 28, 28)).eval()
    # Assert: the dry run left the caller's RNG alone; the stem takes one channel
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), before)
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    assert net[:2](torch.zeros(2, 1, 28, 28)).shape[1:] == shape and net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_mobilenet_v3_small_keeps_4x4_maps_for_32x32_images_and_names_its_blocks() -> None:
    # Execute
    names = block_names("mobilenet_v3_small")
    net = build_model("mobilenet_v3_small").eval()
    # Assert
    assert names[0] == "stem" and names[-1] == "classifier" and len(names) == 14
    assert net[:-1](torch.zeros(1, 3, 32, 32)).shape == (1, 576, 4, 4)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(1.53e6, rel=0.01)
    assert resolve_cut("s", "mobilenet_v3_small") == 3 and cut_shape(3, "mobilenet_v3_small") == (24, 16, 16)


def test_resnet_stage_head_on_a_network_without_stages_names_aux_head() -> None:
    with pytest.raises(ValueError, match="aux-head: 'mobilenet_v3_small' declares no stages.*pooled"):
        build_head("resnet-stage", CutPoint.of("mobilenet_v3_small", 3, 10))


def test_resnet_stage_head_follows_the_input_shape_of_resnet18() -> None:
    # Execute
    head = build_head("resnet-stage", CutPoint.of("resnet18", 4, 10, (1, 28, 28)))
    # Assert: layer3 of a 1x28x28 ResNet-18 takes the 128 x 4 x 4 cut
    assert cut_shape(4, "resnet18", 10, (1, 28, 28)) == (128, 4, 4)
    assert head(torch.zeros(2, 128, 4, 4)).shape == (2, 10)


@pytest.mark.slow  # 15-40 s each on 2 loaded CPU cores
@pytest.mark.parametrize("strategy", ["csl", "dsl"])
@pytest.mark.parametrize("model", ["mobilenet_v3_small", "resnet18"])
def test_builtin_networks_train_end_to_end_with_csl_and_dsl(model: str, strategy: str) -> None:
    # Prepare: tiny synthetic inputs, two rounds of two batches of 8
    config = make_config(model=model, cut="s", **{"batch-size": 8, "lr": 0.01})
    _, top, _ = build_halves(config)
    start_top = [p.detach().clone() for p in top.parameters()]
    client = make_client(config, strategy, steps=2)
    start_bottom = [p.detach().clone() for p in client.bottom.parameters()]
    server = make_server(config, strategy, top)
    half = get_strategy(strategy).client(config)
    # Execute
    _, first = drive_round(half, server, client, round_number=1)
    next_round(client, 2)
    _, second = drive_round(half, server, client, round_number=2)
    # Assert: both halves moved, and what went up had the dry run's shape
    z = [u.tensors["activations"]["z"] for u in first + second if u.tensors]
    assert sum(len(t) for t in z) == 4 * 8 and all(t.shape[1:] == activation_shape(config) and torch.isfinite(t).all() for t in z)
    assert all(not torch.equal(a, b) for a, b in zip(start_bottom, client.bottom.parameters()) if a.dim() > 1)
    assert any(not torch.equal(a, b) for a, b in zip(start_top, top.parameters()))
