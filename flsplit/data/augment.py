"""Batched augmentation (zero padding, a random crop of the image size, horizontal flip) and normalisation.

The padding follows the image size: an eighth of the shorter side, 4 pixels for CIFAR's
32x32 (the standard CIFAR augmentation), 3 for 28x28. The randomness comes from an explicit
generator, so a batch is a pure function of (seed, client, epoch, batch index): a client can
rebuild any batch without storing it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``uint8 (B, H, W, C)`` to a normalised ``float32 (B, C, H, W)`` tensor (one mean and std per channel)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def padding_for(height: int, width: int) -> int:
    """Pixels of zero padding before the random crop: an eighth of the shorter side (at least 1)."""
    return max(1, min(height, width) // 8)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pad with zeros, crop a random window of the original size and flip half the images."""
    b, c, h, w = x.shape
    pad = padding_for(h, w)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :].expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]
    cropped_rows = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return cropped_rows.gather(3, cols[:, None, None, :].expand(b, c, h, w))
