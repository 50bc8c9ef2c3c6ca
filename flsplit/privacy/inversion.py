"""Input reconstruction from cut activations: an inversion network trained on auxiliary data.

The attacker passes auxiliary images through a bottom slice (the client's own, white-box, or a
surrogate, black-box), trains a decoder from those activations back to the images, and applies
it to the activations it observed. Images are compared in pixel space, ``[0, 1]`` per channel.

PSNR and SSIM come from ``torchmetrics``, which implements them as the image literature does
(Gaussian 11x11 SSIM window, per-image PSNR), so the numbers compare with published attacks such
as SDAR and UnSplit without a hand-written metric in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


@dataclass(frozen=True)
class ReconstructionScores:
    """Mean per-image MSE, PSNR (dB) and SSIM of reconstructions against the originals, in ``[0, 1]`` pixels."""

    mse: float
    psnr: float
    ssim: float


class InversionDecoder(nn.Module):
    """Activations ``(C, h, w)`` to images ``(channels, H, W)``: convolutions, doubling to the image size.

    The last layer is a sigmoid, so its output is a pixel-space image.
    """

    def __init__(self, activation_shape: tuple[int, int, int], image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, height, _ = activation_shape
        self.image_size = image_shape[1:]
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        while height < self.image_size[0]:
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            height *= 2
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, image_shape[0], 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(z)
        if tuple(out.shape[-2:]) != tuple(self.image_size):
            out = nn.functional.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def train_decoder(
    z: torch.Tensor,
    images: torch.Tensor,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    width: int = 64,
    seed: int = 0,
) -> InversionDecoder:
    """A decoder of ``width`` channels fitted to map ``z`` to pixel-space ``images`` (MSE, Adam), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = InversionDecoder(tuple(z.shape[1:]), tuple(images.shape[1:]), width)  # type: ignore[arg-type]
        generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(decoder.parameters(), lr=lr)
        decoder.train()
        for _ in range(epochs):
            order = torch.randperm(len(z), generator=generator)
            for start in range(0, len(z), batch_size):
                chosen = order[start : start + batch_size]
                if len(chosen) < 2:
                    continue  # batch norm needs two samples
                optimiser.zero_grad()
                nn.functional.mse_loss(decoder(z[chosen]), images[chosen]).backward()
                optimiser.step()
    return decoder.eval()


def reconstruct(decoder: nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The decoder's images for ``z``, without gradients."""
    with torch.no_grad():
        return torch.cat([decoder(z[start : start + batch_size]) for start in range(0, len(z), batch_size)])


def score_reconstructions(reconstructions: torch.Tensor, originals: torch.Tensor) -> ReconstructionScores:
    """Mean per-image MSE, PSNR and SSIM, both tensors pixel-space ``(N, C, H, W)`` in ``[0, 1]``."""
    reconstructions, originals = reconstructions.clamp(0, 1).float(), originals.clamp(0, 1).float()
    mse = ((reconstructions - originals) ** 2).flatten(1).mean(dim=1)
    psnr = peak_signal_noise_ratio(reconstructions, originals, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(reconstructions, originals, data_range=1.0, reduction="none")
    return ReconstructionScores(float(mse.mean()), float(psnr.clamp(max=100.0).mean()), float(ssim.mean()))  # type: ignore[union-attr]


def save_grid(rows: dict[str, torch.Tensor], path: str | Path, columns: int = 8) -> Path:
    """A PNG with one labelled row per entry (originals first, then each attack's reconstructions)."""
    path = Path(path)
    columns = min(columns, min(len(images) for images in rows.values()))
    figure = Figure(figsize=(1.2 * columns + 1.6, 1.3 * len(rows)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, (label, images) in enumerate(rows.items()):
        for column in range(columns):
            axis = axes[row][column]
            axis.imshow(images[column].detach().clamp(0, 1).permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray" if images.shape[1] == 1 else None)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def psnr_of_mse(mse: float) -> float:
    """The PSNR (dB) of a mean squared error in ``[0, 1]`` pixels, for reading published MSEs."""
    return -10.0 * math.log10(mse)
