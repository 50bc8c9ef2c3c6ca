"""Batched CIFAR augmentation (4-pixel pad, random 32x32 crop, horizontal flip) and normalisation.

The randomness comes from an explicit generator, so a batch is a pure function of
(seed, client, epoch, batch index): a client can rebuild any batch without storing it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``uint8 (B, 32, 32, 3)`` to a normalised ``float32 (B, 3, 32, 32)`` tensor."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pad by 4 with zeros, crop a random 32x32 window and flip half the images."""
    b, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=generator)
    dx = torch.randint(0, 9, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :].expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]
    cropped_rows = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 8))
    return cropped_rows.gather(3, cols[:, None, None, :].expand(b, c, h, w))
