"""A plug-in network: a four-block CNN for small images, such as 28x28 grayscale digits.

Nothing in ``flsplit`` changes: select it with

    flwr run . --run-config "model='examples.small_cnn:small_cnn' cut='conv2'"

A builder takes the number of classes and the dataset's ``(channels, height, width)`` and
returns a ``Network``: the blocks in order (the first stays on the client, the last on the
server) and a name for each, so the cut can be a block name or index. ``docs/models.md``
walks through this file.
"""

from __future__ import annotations

from torch import nn

from flsplit.models import Network


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))


def small_cnn(num_classes: int, input_shape: tuple[int, int, int]) -> Network:
    """Three 3x3 conv blocks (16, 32, 64 channels, each halving the resolution) and a linear classifier."""
    channels = input_shape[0]
    blocks = [_conv(channels, 16), _conv(16, 32), _conv(32, 64), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))]
    return Network(blocks, input_shape, names=["conv1", "conv2", "conv3", "classifier"])
