"""Input reconstruction: a white-box decoder at a shallow cut beats the mean image; metrics and grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flsplit.data import load_dataset
from flsplit.data import test_tensors as normalised_test_images
from flsplit.privacy.inversion import reconstruct, save_grid, score_reconstructions, train_decoder
from flsplit.split import build_halves
from tests.halves import make_config


def test_white_box_reconstruction_at_a_shallow_cut_clearly_beats_the_mean_image(tmp_path: Path):
    # Prepare: the bottom of one block, 192 auxiliary and 64 attacked synthetic test images
    bottom, _, _ = build_halves(make_config(cut=1))
    data = load_dataset("synthetic")
    x, _ = normalised_test_images(data, torch.arange(256).numpy())
    pixels = x * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(1, -1, 1, 1)
    with torch.no_grad():
        z = bottom.eval()(x)
    mean_image = pixels[:192].mean(dim=0, keepdim=True).expand(64, -1, -1, -1)

    # Execute
    decoder = train_decoder(z[:192], pixels[:192], epochs=8, batch_size=16, lr=3e-3, width=16, seed=0)
    reconstructions = reconstruct(decoder, z[192:])
    attack = score_reconstructions(reconstructions, pixels[192:])
    baseline = score_reconstructions(mean_image, pixels[192:])
    grid = save_grid({"original": pixels[192:], "white-box": reconstructions}, tmp_path / "grid.png")

    # Assert
    assert attack.mse < 0.6 * baseline.mse
    assert attack.psnr > baseline.psnr + 2.0
    assert attack.ssim > baseline.ssim + 0.2
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_of_a_perfect_and_a_known_reconstruction():
    # Prepare
    originals = torch.full((2, 3, 16, 16), 0.5)

    # Execute
    perfect = score_reconstructions(originals.clone(), originals)
    off = score_reconstructions(originals + 0.1, originals)

    # Assert
    assert perfect.mse == 0.0 and perfect.ssim == pytest.approx(1.0)
    assert off.mse == pytest.approx(0.01)
    assert off.psnr == pytest.approx(20.0)
