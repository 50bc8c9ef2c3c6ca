"""Distance correlation: near 0 for independent samples, 1 for a similarity transform."""

import pytest
import torch

from flsplit.privacy.dcor import batched_distance_correlation, distance_correlation


def test_distance_correlation_is_low_for_independent_and_high_for_dependent_samples():
    # Prepare
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, 1, 1, generator=generator)
    independent = torch.randn(300, 2, generator=generator)
    nonlinear = torch.tanh(x.reshape(300, -1)) ** 2

    # Execute
    independent_dcor = float(distance_correlation(x, independent))
    nonlinear_dcor = float(distance_correlation(x, nonlinear))
    scaled_dcor = float(distance_correlation(x, 3.0 * x + 1.0))

    # Assert
    assert independent_dcor < 0.35
    assert nonlinear_dcor > independent_dcor + 0.15
    assert scaled_dcor == pytest.approx(1.0, abs=1e-4)


def test_distance_correlation_is_differentiable_and_gradient_descent_lowers_it():
    # Prepare
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 10, generator=generator)
    z = (x[:, :4] + 0.1 * torch.randn(64, 4, generator=generator)).requires_grad_(True)
    before = float(distance_correlation(x, z.detach()))

    # Execute
    optimiser = torch.optim.Adam([z], lr=0.1)
    for _ in range(50):
        optimiser.zero_grad()
        distance_correlation(x, z).backward()
        optimiser.step()

    # Assert
    assert torch.isfinite(z.grad).all()
    assert float(distance_correlation(x, z.detach())) < before - 0.1


def test_batched_distance_correlation_averages_batches_and_rejects_mismatched_sizes():
    # Prepare
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(100, 5, generator=generator)

    # Execute
    value = batched_distance_correlation(x, 2.0 * x, batch_size=32)

    # Assert
    assert value == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="same batch"):
        distance_correlation(x, x[:50])
