"""The networks flsplit can cut, by name: how to build them, their stages, and the cut points.

Every network is a flat ``Sequential(stem, residual block, ..., classifier)``; a cut after
``k`` blocks keeps the stem and the first ``k`` blocks on the client. Shapes at the cut come
from a dry run of the bottom slice, not from a table, so a new network needs no shape rules.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

import torch
from torch import nn

from flsplit.models.resnet import DEPTHS, cifar_resnet
from flsplit.models.resnet18 import STAGES as RESNET18_STAGES
from flsplit.models.resnet18 import resnet18

#: Input shape every built-in network expects (CIFAR images).
INPUT_SHAPE = (3, 32, 32)

_BUILDERS: dict[str, Callable[[int], nn.Sequential]] = {
    **{name: partial(cifar_resnet, name) for name in DEPTHS},
    "resnet18": resnet18,
}
_STAGES: dict[str, tuple[int, ...]] = {
    **{name: ((depth - 2) // 6,) * 3 for name, depth in DEPTHS.items()},
    "resnet18": RESNET18_STAGES,
}


def model_names() -> list[str]:
    """Names of the built-in networks."""
    return sorted(_BUILDERS)


def _known(model_name: str) -> None:
    if model_name not in _BUILDERS:
        raise ValueError(f"model: unknown model '{model_name}'; choose one of {model_names()}")


def build_model(model_name: str, num_classes: int = 10) -> nn.Sequential:
    """Build a named network as ``Sequential(stem, block_1, ..., block_n, classifier)``."""
    _known(model_name)
    return _BUILDERS[model_name](num_classes)


def stage_sizes(model_name: str) -> tuple[int, ...]:
    """Residual blocks per stage (a stage ends where the resolution next halves)."""
    _known(model_name)
    return _STAGES[model_name]


def num_blocks(model_name: str) -> int:
    """Number of residual blocks of a named network."""
    return sum(stage_sizes(model_name))


def next_stage_blocks(model_name: str, cut: int) -> range:
    """Block positions (1-based, as in the Sequential) of the stage that follows a cut.

    That is the first stage that starts after the cut; a cut inside the last stage gets the
    rest of that stage. FSL-SAGE's auxiliary model is this stage, freshly initialised.
    """
    end = 0
    for size in stage_sizes(model_name):
        start, end = end, end + size
        if start >= cut:
            return range(start + 1, end + 1)
    return range(cut + 1, end + 1)


@lru_cache(maxsize=32)
def cut_shape(cut: int, model_name: str, num_classes: int = 10) -> tuple[int, ...]:
    """Per-sample shape of the activations after ``cut`` blocks, from a dry run of the bottom."""
    with torch.random.fork_rng(devices=[]):  # building must not move the caller's seeded RNG
        model = build_model(model_name, num_classes).eval()
    with torch.no_grad():
        return tuple(model[: cut + 1](torch.zeros(1, *INPUT_SHAPE)).shape[1:])


PAPER_CUTS = {"s": 12, "m": 17, "d": 26}
PAPER_BLOCKS = 54


def resolve_cut(cut: str | int, model_name: str) -> int:
    """Turn ``s``/``m``/``d`` (12/17/26 of ResNet-110's 54 blocks, scaled) or a count into blocks."""
    blocks = num_blocks(model_name)
    if isinstance(cut, str) and cut in PAPER_CUTS:
        return max(1, round(PAPER_CUTS[cut] * blocks / PAPER_BLOCKS))
    try:
        k = int(cut)
    except ValueError:
        raise ValueError(f"cut: '{cut}' is not s, m, d or a block count") from None
    if not 1 <= k < blocks:
        raise ValueError(f"cut: {k} must be between 1 and {blocks - 1} for {model_name}")
    return k
