"""MobileNetV3-Small from torchvision, adapted to small images, as a flat list of blocks.

MobileNetV3-Small (Howard et al., 2019) is built for phones and microcontroller-class edge
devices, so it is the edge-device example among the built-ins. torchvision's network
downsamples by 32 (a stride-2 stem, then four stride-2 stages), which leaves a 1x1 map for a
32x32 image. As in the usual CIFAR adaptations, the stem and the first inverted-residual
block run at stride 1 instead, so a 32x32 image reaches 4x4 before pooling. Everything else
is torchvision's own code and initialisation: its block definitions, squeeze-excitation and
hard-swish are not rewritten here. Weights are never downloaded (``weights=None``).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import mobilenet_v3_small as torchvision_mobilenet_v3_small


def mobilenet_v3_small(num_classes: int = 10, in_channels: int = 3) -> list[nn.Module]:
    """MobileNetV3-Small as ``[stem, features.1, ..., features.12, classifier]`` (14 blocks).

    Parameters
    ----------
    num_classes
        Outputs of the last linear layer.
    in_channels
        Image channels (1 for grayscale); the stem's first convolution takes this many.

    Returns
    -------
    list[nn.Module]
        The blocks in order; ``nn.Sequential(*blocks)`` is the whole network.
    """
    net = torchvision_mobilenet_v3_small(weights=None, num_classes=num_classes)
    stem_conv = net.features[0][0]
    if in_channels != stem_conv.in_channels:
        stem_conv = nn.Conv2d(in_channels, stem_conv.out_channels, 3, 2, 1, bias=False)
        nn.init.kaiming_normal_(stem_conv.weight, mode="fan_out")  # as torchvision initialises it
        net.features[0][0] = stem_conv
    stem_conv.stride = (1, 1)
    net.features[1].block[0][0].stride = (1, 1)  # the first block's depthwise convolution
    classifier = nn.Sequential(net.avgpool, nn.Flatten(), net.classifier)
    return [*net.features, classifier]
