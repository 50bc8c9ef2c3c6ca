"""CIFAR ResNets, the split at a block boundary, and auxiliary heads."""

import pytest
import torch

from flsplit.models import (
    CutPoint,
    build_head,
    cifar_resnet,
    cut_shape,
    head_names,
    num_blocks,
    resolve_cut,
    split_model,
)


@pytest.mark.parametrize(
    ("name", "blocks", "params"),
    [("resnet20", 9, 0.27e6), ("resnet32", 15, 0.46e6), ("resnet56", 27, 0.85e6), ("resnet110", 54, 1.7e6)],
)
def test_depth_gives_paper_block_and_parameter_counts(name: str, blocks: int, params: float) -> None:
    # Execute
    model = cifar_resnet(name)
    # Assert
    assert num_blocks(name) == blocks
    assert len(model) == blocks + 2
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.03)


@pytest.mark.parametrize("cut", [1, 3, 4, 7, 8])
@pytest.mark.parametrize("train_mode", [True, False])
def test_top_of_bottom_equals_unsplit_model_exactly(cut: int, train_mode: bool) -> None:
    # Prepare
    torch.manual_seed(0)
    model = cifar_resnet("resnet20").train(train_mode)
    x = torch.randn(4, 3, 32, 32)
    # Execute
    bottom, top = split_model(model, cut)
    expected = model(x)
    got = top(bottom(x))
    # Assert
    assert torch.equal(got, expected)
    assert bottom(x).shape[1:] == cut_shape(cut, "resnet20")


def test_named_cuts_follow_the_paper_and_scale_with_depth() -> None:
    assert [resolve_cut(c, "resnet110") for c in "smd"] == [12, 17, 26]
    assert [resolve_cut(c, "resnet20") for c in "smd"] == [2, 3, 4]
    assert resolve_cut("5", "resnet20") == 5


@pytest.mark.parametrize("bad", ["x", "0", "9"])
def test_bad_cut_names_the_key(bad: str) -> None:
    with pytest.raises(ValueError, match="cut"):
        resolve_cut(bad, "resnet20")


@pytest.mark.parametrize("name", ["linear", "pooled", "conv"])
def test_each_head_maps_activations_to_class_scores(name: str) -> None:
    # Prepare
    head = build_head(name, CutPoint((32, 16, 16), 100))
    # Execute
    out = head(torch.randn(3, 32, 16, 16))
    # Assert
    assert out.shape == (3, 100)


def test_linear_head_is_flatten_then_one_fully_connected_layer() -> None:
    head = build_head("linear", CutPoint((16, 32, 32), 10))
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 16 * 32 * 32


def test_unknown_head_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="aux-head.*linear"):
        build_head("mlp9", CutPoint((16, 32, 32), 10))
    assert {"linear", "pooled", "conv"} <= set(head_names())
