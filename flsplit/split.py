"""Build the two halves of the configured network (and the auxiliary head) from a seed.

A U-shaped split cuts the top half once more (``build_u_slices``): the server keeps the
middle, the client the head.

Every party calls this with the same config and seed, so all clients start from the same
bottom slice and the server's top slice matches it, with no weights sent at start-up.
"""

from __future__ import annotations

import torch
from torch import nn

from flsplit.config import ConfigError, RunConfig
from flsplit.models import CutPoint, block_names, build_head, build_model, cut_shape, num_blocks, split_model


def build_halves(config: RunConfig) -> tuple[nn.Sequential, nn.Sequential, nn.Module]:
    """``(bottom, top, aux_head)`` initialised from ``config.seed``, for the dataset's input shape."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.model, config.num_classes, config.input_shape)
        aux = build_aux(config)
    bottom, top = split_model(model, config.cut_blocks)
    return bottom, top, aux


def build_aux(config: RunConfig) -> nn.Module:
    """The configured auxiliary head at this config's cut (from the current random state)."""
    return build_head(config.head, CutPoint.of(config.model, config.cut_blocks, config.num_classes, config.input_shape))


def activation_shape(config: RunConfig) -> tuple[int, int, int]:
    """Per-sample shape of the cut-layer activations for this config."""
    return cut_shape(config.cut_blocks, config.model, config.num_classes, config.input_shape)  # type: ignore[return-value]


def resolve_head_cut(head_cut: str, config: RunConfig) -> int:
    """The last block the server holds in a U-shaped split; the client's head is every block after it.

    Empty means the last block before the classifier, so the head is the classifier alone
    (global pool and linear layer for a CIFAR ResNet). Otherwise a block index or name, as
    ``cut`` takes, after the cut (the server must hold at least one block).
    """
    blocks = num_blocks(config.model, config.input_shape)
    if not head_cut:
        return blocks
    names = block_names(config.model, config.input_shape)
    k = int(head_cut) if head_cut.lstrip("-").isdigit() else names.index(head_cut) if head_cut in names else -1
    if not config.cut_blocks < k <= blocks:
        raise ConfigError(
            f"invalid run config:\n  - head-cut: '{head_cut}' must be a block index in {config.cut_blocks + 1}..{blocks} "
            f"or a block name in {list(names[config.cut_blocks + 1 : blocks + 1])} (after the cut, {config.cut}); "
            "leave it empty for the classifier alone"
        )
    return k


def build_u_slices(config: RunConfig, head_cut: int) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential, nn.Module]:
    """``(bottom, middle, head, aux_head)`` of a U-shaped split, from the same seeded network as ``build_halves``.

    The bottom and auxiliary head equal ``build_halves``'s, and ``head(middle(bottom(x)))`` is
    the whole network: the server's top slice is cut once more, after block ``head_cut``.
    """
    bottom, top, aux = build_halves(config)
    split = head_cut - config.cut_blocks  # blocks of the top slice the server keeps
    return bottom, top[:split], top[split:], aux


def head_input_shape(config: RunConfig, head_cut: int) -> tuple[int, ...]:
    """Per-sample shape of ``z2``, the middle's output that goes down to the client's head."""
    return cut_shape(head_cut, config.model, config.num_classes, config.input_shape)
