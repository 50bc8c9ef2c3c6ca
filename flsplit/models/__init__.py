"""The networks flsplit cuts, the split at a block boundary, and auxiliary heads."""

from flsplit.models.heads import CutPoint, build_head, head_names, register_head
from flsplit.models.networks import (
    build_model,
    cut_shape,
    model_names,
    next_stage_blocks,
    num_blocks,
    resolve_cut,
    stage_sizes,
)
from flsplit.models.resnet import DEPTHS, cifar_resnet, split_model

__all__ = [
    "DEPTHS",
    "CutPoint",
    "build_head",
    "build_model",
    "cifar_resnet",
    "cut_shape",
    "head_names",
    "model_names",
    "next_stage_blocks",
    "num_blocks",
    "register_head",
    "resolve_cut",
    "split_model",
    "stage_sizes",
]
