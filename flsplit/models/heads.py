"""Auxiliary heads that give the client a local loss on the cut-layer activations.

Heads are looked up by name, so a run config selects one and a new head is one
``@register_head`` function away.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

HeadFactory = Callable[[tuple[int, int, int], int], nn.Module]
_HEADS: dict[str, HeadFactory] = {}


def register_head(name: str) -> Callable[[HeadFactory], HeadFactory]:
    """Register a head factory ``(cut_shape, num_classes) -> nn.Module`` under ``name``."""

    def wrap(factory: HeadFactory) -> HeadFactory:
        _HEADS[name] = factory
        return factory

    return wrap


def head_names() -> list[str]:
    """Names of all registered heads."""
    return sorted(_HEADS)


def build_head(name: str, cut_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build the head registered as ``name`` for activations of shape ``cut_shape``."""
    if name not in _HEADS:
        raise ValueError(f"aux-head: unknown head '{name}'; choose one of {head_names()}")
    return _HEADS[name](cut_shape, num_classes)


@register_head("linear")
def linear_head(cut_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The DSL paper's head: flatten, then one fully connected layer."""
    c, h, w = cut_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


@register_head("pooled")
def pooled_head(cut_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Average-pool to 4x4 first: far fewer inputs, and it stays stable at larger learning rates."""
    c, _, _ = cut_shape
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(c * 16, num_classes))


@register_head("conv")
def conv_head(cut_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """One 3x3 convolution with batch norm, global pooling and a linear layer."""
    c, _, _ = cut_shape
    return nn.Sequential(
        nn.Conv2d(c, c, 3, 1, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, num_classes),
    )
