"""CIFAR ResNets, the split at a block boundary, and auxiliary heads."""

from flsplit.models.heads import build_head, head_names, register_head
from flsplit.models.resnet import (
    DEPTHS,
    cifar_resnet,
    cut_shape,
    num_blocks,
    resolve_cut,
    split_model,
)

__all__ = [
    "DEPTHS",
    "build_head",
    "cifar_resnet",
    "cut_shape",
    "head_names",
    "num_blocks",
    "register_head",
    "resolve_cut",
    "split_model",
]
