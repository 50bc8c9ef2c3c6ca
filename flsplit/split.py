"""Build the two halves of the configured network (and the auxiliary head) from a seed.

Every party calls this with the same config and seed, so all clients start from the same
bottom slice and the server's top slice matches it, with no weights sent at start-up.
"""

from __future__ import annotations

import torch
from torch import nn

from flsplit.config import RunConfig
from flsplit.models import CutPoint, build_head, build_model, cut_shape, split_model


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
