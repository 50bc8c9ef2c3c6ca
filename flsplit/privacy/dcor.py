"""Distance correlation dCor(x, z) (Székely et al., 2007), differentiable, in torch.

It is 0 exactly when a batch's inputs and activations are independent and 1 when one is an
orthogonal linear map of the other, so it measures how much of ``x`` the activations carry
whatever their shape. NoPeek (Vepakomma et al., 2020) minimises it on the client, and the
leakage report quotes it as a proxy.
"""

from __future__ import annotations

import torch

#: Keeps the square roots differentiable where a distance or a variance is 0.
_EPS = 1e-12


def _centred_distances(samples: torch.Tensor) -> torch.Tensor:
    """The batch's pairwise Euclidean distances, double-centred (rows and columns mean 0)."""
    flat = samples.flatten(1).double()
    norms = flat.pow(2).sum(1)
    squared = (norms.unsqueeze(0) + norms.unsqueeze(1) - 2 * flat @ flat.T).clamp(min=0)  # B x B, not B x B x D
    distances = (squared + _EPS).sqrt()  # not cdist: its gradient at a 0 distance is undefined
    return distances - distances.mean(0, keepdim=True) - distances.mean(1, keepdim=True) + distances.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation of the batch ``x`` with ``z`` (same first dimension), in [0, 1].

    Computed in float64 whatever autocast made ``z``; returned in ``z``'s float dtype so the
    gradient flows back into ``z``'s graph.
    """
    if len(x) != len(z) or len(x) < 2:
        raise ValueError(f"distance_correlation: needs two or more paired samples, got {len(x)} and {len(z)}")
    a, b = _centred_distances(x), _centred_distances(z)
    covariance = (a * b).mean()
    variance = ((a * a).mean() * (b * b).mean()).sqrt()
    return (covariance.clamp(min=0) / (variance + _EPS) + _EPS).sqrt().to(torch.float32)
