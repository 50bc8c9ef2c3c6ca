"""A black-box attacker's stand-in for the client's bottom slice.

An honest-but-curious server in a label-sharing split knows the architecture, holds its own top
slice, and sees the activations ``z`` clients upload, but not the client's weights. It trains a
freshly initialised bottom of the same architecture on its labelled auxiliary images so that

- its own top classifies them (cross-entropy through the frozen top), which pulls the
  surrogate's features towards the ones the top was trained to read, and
- the surrogate's activations have the per-channel mean and spread of the observed ``z``.

A decoder trained on the surrogate's activations is then applied to the real ``z``. This is a
weaker, UnSplit/SDAR-like attacker than the white-box one; the report labels which is which.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def train_surrogate_bottom(
    template: nn.Module,
    top: nn.Module,
    aux_x: torch.Tensor,
    aux_y: torch.Tensor,
    observed_z: torch.Tensor,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    match_weight: float = 1.0,
    seed: int = 0,
) -> nn.Module:
    """A re-initialised copy of ``template`` trained through the frozen ``top``, in eval mode.

    ``template`` supplies only the architecture; its weights are discarded.
    """
    target_mean, target_std = _channel_moments(observed_z)
    top = copy.deepcopy(top).eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        surrogate = copy.deepcopy(template)
        for module in surrogate.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        surrogate.requires_grad_(True).train()
        optimiser = torch.optim.Adam(surrogate.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(aux_x), generator=generator)
            for start in range(0, len(aux_x), batch_size):
                chosen = order[start : start + batch_size]
                if len(chosen) < 2:
                    continue
                z = surrogate(aux_x[chosen])
                mean, std = _channel_moments(z)
                loss = nn.functional.cross_entropy(top(z), aux_y[chosen])
                loss = loss + match_weight * ((mean - target_mean).pow(2).mean() + (std - target_std).pow(2).mean())
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return surrogate.eval()


def _channel_moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over the batch and any spatial positions."""
    flat = z.transpose(0, 1).flatten(1) if z.dim() > 2 else z.T
    return flat.mean(dim=1), flat.std(dim=1)
