"""CIFAR ResNets of He et al. (2016), built as a flat sequence of blocks so they can be cut.

The network is ``stem -> 3n residual blocks -> classifier`` with 16/32/64 channels and
option-A (parameter-free, zero-padded) shortcuts, so ResNet-110 has 54 blocks and about
1.7 M parameters as in the paper. Keeping the blocks in one ``nn.Sequential`` makes a cut
after block ``k`` a plain slice, and ``top(bottom(x))`` is the unsplit forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the new channels."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, self.extra - pad))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or padded) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_pad = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = _PadShortcut(planes - in_planes) if needs_pad else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Stem(nn.Sequential):
    """The first 3x3 convolution, batch norm and ReLU."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())


class Classifier(nn.Sequential):
    """Global average pooling and the final linear layer."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


def cifar_resnet(model_name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """Build a named CIFAR ResNet as ``Sequential(stem, block_1, ..., block_3n, classifier)``.

    The network is fully convolutional up to a global average pool, so it takes any image size;
    ``in_channels`` is 1 for grayscale images.
    """
    if model_name not in DEPTHS:
        raise ValueError(f"model: unknown model '{model_name}'; choose one of {sorted(DEPTHS)}")
    per_stage = (DEPTHS[model_name] - 2) // 6
    layers: list[nn.Module] = [Stem(in_channels)]
    in_planes = 16
    for stage, planes in enumerate((16, 32, 64)):
        for i in range(per_stage):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(BasicBlock(in_planes, planes, stride))
            in_planes = planes
    layers.append(Classifier(num_classes))
    model = nn.Sequential(*layers)
    model.apply(_init_weights)
    return model


def split_model(model: nn.Sequential, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut a model after ``cut`` residual blocks into ``(bottom, top)``.

    The two halves share the original modules, so ``top(bottom(x)) == model(x)`` exactly.
    """
    blocks = len(model) - 2
    if not 0 <= cut <= blocks:
        raise ValueError(f"cut: {cut} blocks is outside 0..{blocks} for this model")
    return model[: cut + 1], model[cut + 1 :]
