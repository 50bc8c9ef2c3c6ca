"""The networks flsplit can cut: a registry of builders, their blocks and stages, and the cut.

A network is an ordered list of blocks, ``Sequential(block_0, ..., block_n)``: the first is
the stem, the last the classifier, and a cut after block ``k`` keeps blocks ``0..k`` on the
client. Networks are looked up as strategies and heads are: by a registered name
(``@register_model``) or by a dotted path ``package.module:builder`` to the user's own code.

A builder is called as ``builder(num_classes, input_shape)`` with the dataset's
``(channels, height, width)`` and returns a ``Network``. Shapes at the cut come from a dry run
of the bottom slice at that input shape, not from a table, so a new network needs no shape
rules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from flsplit.models.mobilenet import mobilenet_v3_small
from flsplit.models.resnet import DEPTHS, cifar_resnet
from flsplit.models.resnet18 import STAGES as RESNET18_STAGES
from flsplit.models.resnet18 import resnet18

#: Input shape of CIFAR images, the default when the dataset does not say otherwise.
INPUT_SHAPE = (3, 32, 32)

Shape = tuple[int, int, int]


@dataclass
class Network:
    """What a model builder returns: the blocks in order, and what flsplit needs to cut them.

    Attributes
    ----------
    blocks
        The network as an ordered list of modules; ``blocks[0]`` (the stem) always stays on the
        client and ``blocks[-1]`` (the classifier) on the server.
    input_shape
        The ``(channels, height, width)`` the network expects.
    names
        One name per block, so a ``cut`` can name a block; default ``"0"``, ``"1"``, ...
    stages
        Blocks per stage between stem and classifier (a stage ends where the resolution next
        halves), for the ``resnet-stage`` head; ``None`` if the network declares none.
    """

    blocks: Sequence[nn.Module]
    input_shape: Shape
    names: Sequence[str] | None = None
    stages: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.blocks) < 3:
            raise ValueError(f"model: a network needs at least 3 blocks to be cut, got {len(self.blocks)}")
        if self.names is not None and len(self.names) != len(self.blocks):
            raise ValueError(f"model: {len(self.names)} block names for {len(self.blocks)} blocks")


ModelBuilder = Callable[[int, Shape], Network]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder ``(num_classes, input_shape) -> Network`` under ``name``."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        _BUILDERS[name] = builder
        return builder

    return wrap


def model_names() -> list[str]:
    """Names of the registered networks."""
    return sorted(_BUILDERS)


def get_builder(model_name: str) -> ModelBuilder:
    """Look up a builder by registered name, or import it from ``package.module:builder``."""
    if model_name in _BUILDERS:
        return _BUILDERS[model_name]
    if ":" in model_name:
        module_name, _, attr = model_name.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model: cannot import '{model_name}' ({err})") from None
        if callable(found):
            return found
        raise ValueError(f"model: '{model_name}' is not a callable builder")
    raise ValueError(
        f"model: unknown model '{model_name}'; choose one of {model_names()} or a builder as 'package.module:function'"
    )


def build_network(model_name: str, num_classes: int = 10, input_shape: Shape = INPUT_SHAPE) -> Network:
    """Call the named builder and check that it returns a ``Network`` for this input shape."""
    network = get_builder(model_name)(num_classes, tuple(input_shape))  # type: ignore[arg-type]
    if not isinstance(network, Network):
        raise ValueError(f"model: the builder of '{model_name}' returned {type(network).__name__}, not a Network")
    if tuple(network.input_shape) != tuple(input_shape):
        raise ValueError(
            f"model: '{model_name}' expects inputs of shape {tuple(network.input_shape)} but the dataset "
            f"gives {tuple(input_shape)}; set image-size or choose another model"
        )
    return network


def build_model(model_name: str, num_classes: int = 10, input_shape: Shape = INPUT_SHAPE) -> nn.Sequential:
    """Build a named network as ``Sequential(stem, block_1, ..., block_n, classifier)``."""
    return nn.Sequential(*build_network(model_name, num_classes, input_shape).blocks)


@dataclass(frozen=True)
class _Layout:
    names: tuple[str, ...]
    stages: tuple[int, ...] | None


@lru_cache(maxsize=32)
def _layout(model_name: str, input_shape: Shape = INPUT_SHAPE) -> _Layout:
    with torch.random.fork_rng(devices=[]):  # building must not move the caller's seeded RNG
        network = build_network(model_name, 10, input_shape)
    names = tuple(network.names) if network.names is not None else tuple(str(i) for i in range(len(network.blocks)))
    return _Layout(names, network.stages)


def stage_sizes(model_name: str, input_shape: Shape = INPUT_SHAPE) -> tuple[int, ...]:
    """Residual blocks per stage (a stage ends where the resolution next halves)."""
    stages = _layout(model_name, input_shape).stages
    if stages is None:
        raise ValueError(
            f"aux-head: '{model_name}' declares no stages, so 'resnet-stage' cannot be built; "
            "choose aux-head 'pooled', 'linear' or 'conv'"
        )
    return stages


def num_blocks(model_name: str, input_shape: Shape = INPUT_SHAPE) -> int:
    """Number of blocks between the stem and the classifier (the residual blocks of a ResNet)."""
    return len(_layout(model_name, input_shape).names) - 2


def block_names(model_name: str, input_shape: Shape = INPUT_SHAPE) -> tuple[str, ...]:
    """The name of every block, stem and classifier included."""
    return _layout(model_name, input_shape).names


def next_stage_blocks(model_name: str, cut: int, input_shape: Shape = INPUT_SHAPE) -> range:
    """Block positions (1-based, as in the Sequential) of the stage that follows a cut.

    That is the first stage that starts after the cut; a cut inside the last stage gets the
    rest of that stage. FSL-SAGE's auxiliary model is this stage, freshly initialised.
    """
    end = 0
    for size in stage_sizes(model_name, input_shape):
        start, end = end, end + size
        if start >= cut:
            return range(start + 1, end + 1)
    return range(cut + 1, end + 1)


def mirror_stage_blocks(model_name: str, cut: int, input_shape: Shape = INPUT_SHAPE) -> range:
    """Block positions (1-based) of the rest of the cut's stage and the whole stage after it.

    What the top slice runs first: for a cut at a stage's end (ResNet-18 after ``layer2``)
    that is the next stage alone, as ``next_stage_blocks``; for a cut inside a stage (ResNet-20
    cut ``s``, 2 of stage 1's 3 blocks) it also holds the block that consumes the activations.
    """
    end = 0
    for size in stage_sizes(model_name, input_shape):
        start, end = end, end + size
        if start <= cut < end:
            if cut == start:  # the cut ends the previous stage: this stage is the next one
                return range(cut + 1, end + 1)
            return range(cut + 1, max(end + 1, next_stage_blocks(model_name, end, input_shape).stop))
    return range(cut + 1, end + 1)


@lru_cache(maxsize=32)
def cut_shape(cut: int, model_name: str, num_classes: int = 10, input_shape: Shape = INPUT_SHAPE) -> tuple[int, ...]:
    """Per-sample shape of the activations after ``cut`` blocks, from a dry run of the bottom."""
    with torch.random.fork_rng(devices=[]):  # building must not move the caller's seeded RNG
        model = build_model(model_name, num_classes, input_shape).eval()
    with torch.no_grad():
        return tuple(model[: cut + 1](torch.zeros(1, *input_shape)).shape[1:])


PAPER_CUTS = {"s": 12, "m": 17, "d": 26}
PAPER_BLOCKS = 54


def resolve_cut(cut: str | int, model_name: str, input_shape: Shape = INPUT_SHAPE) -> int:
    """Turn a cut into the index of the last client block.

    ``s``/``m``/``d`` are 12/17/26 of ResNet-110's 54 blocks, scaled to the network's block
    count; otherwise the cut is a block index or a block name.
    """
    blocks = num_blocks(model_name, input_shape)
    if isinstance(cut, str) and cut in PAPER_CUTS:
        return max(1, round(PAPER_CUTS[cut] * blocks / PAPER_BLOCKS))
    names = block_names(model_name, input_shape)
    try:
        k = int(cut)
    except ValueError:
        if cut not in names:
            raise ValueError(
                f"cut: '{cut}' is not s, m, d, a block index or a block name of {model_name}; "
                f"its blocks are {list(names[1:-1])}"
            ) from None
        k = names.index(str(cut))
    if not 1 <= k < blocks:
        raise ValueError(f"cut: {cut} must be between 1 and {blocks - 1} for {model_name} (or a name in {list(names[1:-2])})")
    return k


# --- the built-in networks -------------------------------------------------------------------


def _cifar_resnet(model_name: str) -> ModelBuilder:
    per_stage = (DEPTHS[model_name] - 2) // 6

    def build(num_classes: int, input_shape: Shape) -> Network:
        model = cifar_resnet(model_name, num_classes, in_channels=input_shape[0])
        names = ["stem", *(f"stage{s + 1}.{i}" for s in range(3) for i in range(per_stage)), "classifier"]
        return Network(list(model), input_shape, names, (per_stage,) * 3)

    build.__doc__ = f"{model_name} (He et al. 2016), any image size and channel count."
    return build


for _name in DEPTHS:
    register_model(_name)(_cifar_resnet(_name))


@register_model("resnet18")
def _resnet18(num_classes: int, input_shape: Shape) -> Network:
    """torchvision's ResNet-18 as FSL-SAGE's reference uses it (``flsplit/models/resnet18.py``)."""
    names = ["stem", *(f"layer{s + 1}.{i}" for s in range(4) for i in range(2)), "classifier"]
    return Network(list(resnet18(num_classes, in_channels=input_shape[0])), input_shape, names, RESNET18_STAGES)


@register_model("mobilenet_v3_small")
def _mobilenet_v3_small(num_classes: int, input_shape: Shape) -> Network:
    """torchvision's MobileNetV3-Small adapted to small images (``flsplit/models/mobilenet.py``)."""
    blocks = mobilenet_v3_small(num_classes, in_channels=input_shape[0])
    names = ["stem", *(f"features.{i}" for i in range(1, len(blocks) - 1)), "classifier"]
    return Network(blocks, input_shape, names)
