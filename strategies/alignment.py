"""Gradient estimation at the cut layer, and alignment of an estimator to the server's gradient.

An auxiliary model ``aux`` estimates the server's cut-layer gradient as ``d CE(aux(z), y)/dz``.
Aligning it means training ``aux`` so that this input gradient matches the true one,
``d CE(top(z), y)/dz``, on buffered activations: a loss on a gradient, hence a second-order
backward (``create_graph=True``). Used by FSL-SAGE (Nair et al., ICML 2025).

All gradients are of the batch-mean loss over batches of the training batch size, so they are
on the scale of what a CSL server sends and of what the client's estimate is applied as.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def cut_gradient(model: nn.Module, z: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """``d CE(model(z), y) / dz`` for one batch (mean loss over the batch)."""
    z = z.detach().requires_grad_()
    loss = F.cross_entropy(model(z), y)
    (grad,) = torch.autograd.grad(loss, z, create_graph=create_graph)
    return grad


def _batches(batch_size: int, *tensors: torch.Tensor) -> zip:
    return zip(*(t.split(batch_size) for t in tensors))


def true_gradients(top: nn.Module, z: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The top slice's cut-layer gradients, batch by batch, as training would compute them.

    A copy runs in training mode (BatchNorm on batch statistics, as when the gradient is
    made for a client), so the real top slice's running statistics stay untouched.
    """
    probe = copy.deepcopy(top).train()
    return torch.cat([cut_gradient(probe, zb, yb) for zb, yb in _batches(batch_size, z, y)])


@dataclass(frozen=True)
class Agreement:
    """How close an estimator's gradients are to the true ones on a buffer."""

    cosine: float  # mean over samples of the cosine similarity of the two gradients
    mse: float  # mean squared difference per element

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_cosine": self.cosine, f"{prefix}_mse": self.mse}


def agreement(aux: nn.Module, z: torch.Tensor, y: torch.Tensor, target: torch.Tensor, batch_size: int) -> Agreement:
    """Compare ``aux``'s estimated gradients with ``target`` (without changing ``aux``)."""
    probe = copy.deepcopy(aux).train()
    estimate = torch.cat([cut_gradient(probe, zb, yb) for zb, yb in _batches(batch_size, z, y)])
    # In float64: per-sample gradients of confidently classified samples are tiny, and the
    # product of two float32 norms would underflow.
    e, t = estimate.flatten(1).double(), target.flatten(1).double()
    cosine = (e * t).sum(1) / (e.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-300)
    return Agreement(float(cosine.mean()), float(F.mse_loss(estimate, target)))


def align(
    aux: nn.Module,
    optimizer: torch.optim.Optimizer,
    z: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor,
    epochs: int,
    batch_size: int,
) -> None:
    """Train ``aux`` so its estimated gradients on ``(z, y)`` match ``target``.

    ``optimizer`` (Adam over ``aux``'s parameters in FSL-SAGE) is the estimator's own and
    lives on across alignments, as in the reference. Each epoch is one step on the whole
    buffer (gradients accumulated batch by batch, so memory stays bounded). The loss is the
    squared error normalised by the target's energy: gradients at the cut are tiny, and
    unnormalised their squares would sink below Adam's epsilon. ``aux`` ends with the best
    weights seen (by that loss on the buffer), so a too large rate cannot leave the estimator
    worse than it was.
    """
    energy = target.pow(2).sum().clamp_min(1e-30)
    best_loss, best_state = float("inf"), copy.deepcopy(aux.state_dict())
    aux.train()
    for epoch in range(epochs + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for zb, yb, gb in _batches(batch_size, z, y, target):
            estimate = cut_gradient(aux, zb, yb, create_graph=epoch < epochs)
            batch_loss = (estimate - gb).pow(2).sum() / energy
            if epoch < epochs:
                batch_loss.backward()
            loss += float(batch_loss.detach())
        if loss < best_loss:
            best_loss, best_state = loss, copy.deepcopy(aux.state_dict())
        if epoch < epochs:  # the last pass only scores the final weights
            optimizer.step()
    aux.load_state_dict(best_state)
