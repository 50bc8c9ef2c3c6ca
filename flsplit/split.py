"""Build the two halves of the configured network (and the auxiliary head) from a seed.

Every party calls this with the same config and seed, so all clients start from the same
bottom slice and the server's top slice matches it, with no weights sent at start-up.
"""

from __future__ import annotations

import torch
from torch import nn

from flsplit.config import RunConfig
from flsplit.models import build_head, cifar_resnet, cut_shape, split_model


def build_halves(config: RunConfig) -> tuple[nn.Sequential, nn.Sequential, nn.Module]:
    """``(bottom, top, aux_head)`` initialised from ``config.seed``."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    model = cifar_resnet(config.model, config.num_classes)
    aux = build_head(config.aux_head, activation_shape(config), config.num_classes)
    torch.random.set_rng_state(generator_state)
    bottom, top = split_model(model, config.cut_blocks)
    return bottom, top, aux


def activation_shape(config: RunConfig) -> tuple[int, int, int]:
    """Per-sample shape of the cut-layer activations for this config."""
    return cut_shape(config.cut_blocks, config.model)


def sgd(params: list[nn.Parameter], config: RunConfig) -> torch.optim.SGD:
    """The optimizer every party uses (SGD with momentum and weight decay, as in the paper)."""
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
