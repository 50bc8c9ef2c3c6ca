"""Distance correlation dCor(x, z): how much an activation still depends on its input.

Székely, Rizzo and Bakirov (2007). dCor is 0 only when x and z are independent and 1 when one is
a similarity transform of the other, for any shapes of x and z, which makes it a cheap proxy for
how much of the input the smashed data carries. The function is differentiable so that NoPeek
(Vepakomma et al., 2020) can minimise it as a loss on the client.
"""

from __future__ import annotations

import torch

_EPSILON = 1e-12


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation of two batches, differentiable in both.

    Parameters
    ----------
    x, z : torch.Tensor
        Batches with the same first dimension ``n`` (``n >= 2``); every other dimension is
        flattened, so images and feature maps can be compared directly.

    Returns
    -------
    torch.Tensor
        A scalar in ``[0, 1]``: the square root of the biased V-statistic estimate, as in
        NoPeek. It is biased upwards on small batches, so compare values at equal batch sizes.
    """
    if x.shape[0] != z.shape[0]:
        raise ValueError(
            f"distance_correlation: x has {x.shape[0]} samples and z has {z.shape[0]}; "
            "pass the same batch for both"
        )
    if x.shape[0] < 2:
        raise ValueError("distance_correlation needs a batch of at least 2 samples")
    a = _double_centred_distances(x)
    b = _double_centred_distances(z)
    covariance_xz = (a * b).mean()
    variance_x = (a * a).mean()
    variance_z = (b * b).mean()
    squared = covariance_xz / (torch.sqrt(variance_x * variance_z) + _EPSILON)
    return torch.sqrt(squared.clamp(min=0.0) + _EPSILON)


def batched_distance_correlation(
    x: torch.Tensor, z: torch.Tensor, batch_size: int = 256
) -> float:
    """Mean dCor over consecutive batches, for sets too large for one n×n distance matrix.

    dCor depends on the batch size, so a report states it alongside the number.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    values = []
    with torch.no_grad():
        for start in range(0, x.shape[0] - 1, batch_size):
            x_batch = x[start : start + batch_size]
            if x_batch.shape[0] < 2:
                break
            values.append(
                float(distance_correlation(x_batch.double(), z[start : start + batch_size].double()))
            )
    if not values:
        raise ValueError("batched_distance_correlation needs at least 2 samples")
    return sum(values) / len(values)


def _double_centred_distances(batch: torch.Tensor) -> torch.Tensor:
    flat = batch.reshape(batch.shape[0], -1)
    # |a|² + |b|² − 2a·b needs n×n memory, not the n×n×d of pairwise differences.
    norms = flat.pow(2).sum(dim=1)
    squared = (norms.unsqueeze(1) + norms.unsqueeze(0) - 2.0 * flat @ flat.T).clamp(min=0.0)
    # The square root's gradient is infinite at 0 (the diagonal); the epsilon keeps it finite.
    distances = torch.sqrt(squared + _EPSILON)
    return (
        distances
        - distances.mean(dim=0, keepdim=True)
        - distances.mean(dim=1, keepdim=True)
        + distances.mean()
    )
