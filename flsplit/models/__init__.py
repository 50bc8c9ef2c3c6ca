"""The networks flsplit cuts (a registry of builders), the split at a block boundary, and auxiliary heads."""

from flsplit.models.heads import CutPoint, build_head, head_names, register_head
from flsplit.models.networks import (
    INPUT_SHAPE,
    Network,
    block_names,
    build_model,
    build_network,
    cut_shape,
    get_builder,
    mirror_stage_blocks,
    model_names,
    next_stage_blocks,
    num_blocks,
    register_model,
    resolve_cut,
    stage_sizes,
)
from flsplit.models.resnet import DEPTHS, cifar_resnet, split_model

__all__ = [
    "DEPTHS",
    "INPUT_SHAPE",
    "CutPoint",
    "Network",
    "block_names",
    "build_head",
    "build_model",
    "build_network",
    "get_builder",
    "cifar_resnet",
    "cut_shape",
    "head_names",
    "model_names",
    "mirror_stage_blocks",
    "next_stage_blocks",
    "num_blocks",
    "register_head",
    "register_model",
    "resolve_cut",
    "split_model",
    "stage_sizes",
]
