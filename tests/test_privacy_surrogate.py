"""The black-box surrogate bottom: the client's architecture, never its weights."""

from __future__ import annotations

import torch
from torch import nn

from flsplit.privacy.surrogate import train_surrogate_bottom


def _bottom() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())


def test_the_surrogate_shares_no_weight_with_the_client_and_learns_the_observed_statistics():
    # Prepare: a client bottom whose activations are shifted by 1, and a server top over them
    torch.manual_seed(0)
    client = _bottom()
    top = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    x = torch.randn(64, 3, 8, 8)
    y = torch.arange(64) % 10
    with torch.no_grad():
        observed = client.eval()(x) + 1.0

    # Execute
    untrained = train_surrogate_bottom(client, top, x, y, observed, epochs=0, seed=1)
    trained = train_surrogate_bottom(client, top, x, y, observed, epochs=100, batch_size=32, lr=3e-2, seed=1)

    # Assert
    assert not torch.equal(untrained[0].weight, client[0].weight)
    assert not torch.equal(untrained[0].bias, client[0].bias)
    with torch.no_grad():
        before = (untrained(x).mean() - observed.mean()).abs()
        after = (trained(x).mean() - observed.mean()).abs()
    assert after < 0.5 * before
    assert all(p.requires_grad for p in top.parameters())  # the caller's top is left as it was
