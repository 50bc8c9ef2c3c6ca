"""Auxiliary heads that give the client a local loss on the cut-layer activations.

Heads are looked up by name, so a run config selects one and a new head is one
``@register_head`` function away. A head is built from the ``CutPoint``: the activation shape
at the cut, the number of classes, and which network was cut where (for heads, such as
FSL-SAGE's ``resnet-stage``, that copy part of the network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from flsplit.models.networks import INPUT_SHAPE, build_model, cut_shape, mirror_stage_blocks, next_stage_blocks


@dataclass(frozen=True)
class CutPoint:
    """Where a network is cut: what a head needs to know to be built."""

    shape: tuple[int, ...]  # per-sample activation shape at the cut, e.g. (16, 32, 32)
    num_classes: int
    model: str = ""  # the network's name, for heads built from its layers
    blocks: int = 0  # blocks kept on the client
    input_shape: tuple[int, int, int] = INPUT_SHAPE  # the network's input (channels, height, width)

    @classmethod
    def of(cls, model: str, blocks: int, num_classes: int, input_shape: tuple[int, int, int] = INPUT_SHAPE) -> CutPoint:
        """The cut after ``blocks`` blocks of the named network (shape from a dry run)."""
        return cls(cut_shape(blocks, model, num_classes, input_shape), num_classes, model, blocks, input_shape)


HeadFactory = Callable[[CutPoint], nn.Module]
_HEADS: dict[str, HeadFactory] = {}


def register_head(name: str) -> Callable[[HeadFactory], HeadFactory]:
    """Register a head factory ``CutPoint -> nn.Module`` under ``name``."""

    def wrap(factory: HeadFactory) -> HeadFactory:
        _HEADS[name] = factory
        return factory

    return wrap


def head_names() -> list[str]:
    """Names of all registered heads."""
    return sorted(_HEADS)


def build_head(name: str, cut: CutPoint) -> nn.Module:
    """Build the head registered as ``name`` for the activations at ``cut``."""
    if name not in _HEADS:
        raise ValueError(f"aux-head: unknown head '{name}'; choose one of {head_names()}")
    return _HEADS[name](cut)


@register_head("linear")
def linear_head(cut: CutPoint) -> nn.Module:
    """The DSL paper's (and the official CSE-FSL code's) head: flatten, one fully connected layer."""
    numel = 1
    for size in cut.shape:
        numel *= size
    return nn.Sequential(nn.Flatten(), nn.Linear(numel, cut.num_classes))


@register_head("pooled")
def pooled_head(cut: CutPoint) -> nn.Module:
    """Average-pool to 4x4 first: far fewer inputs, and it stays stable at larger learning rates."""
    c = cut.shape[0]
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(c * 16, cut.num_classes))


@register_head("conv")
def conv_head(cut: CutPoint) -> nn.Module:
    """One 3x3 convolution with batch norm, global pooling and a linear layer."""
    c = cut.shape[0]
    return nn.Sequential(
        nn.Conv2d(c, c, 3, 1, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c, cut.num_classes),
    )


@register_head("resnet-stage")
def resnet_stage_head(cut: CutPoint) -> nn.Module:
    """FSL-SAGE's auxiliary model: the residual stage after the cut (fresh), pooling, linear.

    For ResNet-18 cut after ``layer2`` this is a fresh ``layer3`` (about 2.1 M parameters), as
    in the reference; for a CIFAR ResNet cut at the end of a stage, the next 16/32/64-channel
    stage. The blocks come from a newly built network, so they are initialised as the
    network's own layers are, from the caller's random state.
    """
    return _fresh_blocks(cut, next_stage_blocks, "resnet-stage")


@register_head("resnet-mirror")
def resnet_mirror_head(cut: CutPoint) -> nn.Module:
    """The top slice's first stage, fresh: the rest of the cut's stage, the next stage, pool, linear.

    What the reference's estimator is to the server's model (a copy of the top's first stage):
    where the cut ends a stage (ResNet-18 after ``layer2``) it equals ``resnet-stage``; where it
    falls inside one (ResNet-20 cut ``s``) it keeps the block that consumes the activations,
    which ``resnet-stage`` skips.
    """
    return _fresh_blocks(cut, mirror_stage_blocks, "resnet-mirror")


def _fresh_blocks(cut: CutPoint, positions_of: Callable[..., range], name: str) -> nn.Module:
    if not cut.model:
        raise ValueError(f"aux-head: '{name}' needs the network that was cut")
    positions = positions_of(cut.model, cut.blocks, cut.input_shape)  # raises for a network without stages
    network = build_model(cut.model, cut.num_classes, cut.input_shape)
    stage = [network[i] for i in positions]
    channels = next(m.out_channels for block in reversed(stage) for m in reversed(list(block.modules())) if isinstance(m, nn.Conv2d))
    return nn.Sequential(*stage, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, cut.num_classes))
