"""ResNet-18 as FSL-SAGE's reference builds it, as a flat sequence of blocks so it can be cut.

The reference (Nair et al., ICML 2025) trains torchvision's ImageNet ResNet-18 on 32x32 CIFAR
images unchanged: the 7x7 stride-2 stem and the max-pool bring 32x32 down to 8x8, so the cut
after ``layer2`` carries 128 x 4 x 4 activations per sample. We build it from torchvision
(weights are never downloaded) and flatten it into ``stem, 8 basic blocks, classifier``; the
stages are torchvision's ``layer1`` .. ``layer4`` of two blocks each, so the reference's cut
after ``layer2`` is ``cut = 4``.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18 as torchvision_resnet18

#: Basic blocks per stage (torchvision's layer1..layer4).
STAGES = (2, 2, 2, 2)


def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """torchvision's ResNet-18 (its own initialisation) as ``Sequential(stem, 8 blocks, classifier)``.

    ``in_channels`` other than 3 (grayscale) replaces the first convolution by one of the same
    geometry, initialised as torchvision initialises it.
    """
    net = torchvision_resnet18(weights=None, num_classes=num_classes)
    if in_channels != net.conv1.in_channels:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    blocks = [block for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for block in layer]
    classifier = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return nn.Sequential(stem, *blocks, classifier)
