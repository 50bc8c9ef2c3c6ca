"""Label inference from cut activations: how much of ``y`` a third party can read off ``z``.

In a label-sharing split the server holds the labels anyway, so this measures what the smashed
data alone reveals (to an eavesdropper, or to a server under label DP). Two attackers with a few
labelled auxiliary samples:

- a **linear probe**: logistic regression on the flattened, standardised activations;
- a **nearest centroid**: each class's mean activation over ``shots`` labelled samples, and
  every sample takes the class of the nearest mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LabelInference:
    """Attack accuracies on one evaluation set, beside the chance of guessing its commonest class."""

    probe_accuracy: float
    centroid_accuracy: float
    chance: float
    centroid_shots: int


def infer_labels(
    aux_z: torch.Tensor,
    aux_y: torch.Tensor,
    eval_z: torch.Tensor,
    eval_y: torch.Tensor,
    num_classes: int,
    shots: int = 10,
    probe_epochs: int = 200,
    seed: int = 0,
) -> LabelInference:
    """Fit both attackers on the auxiliary activations and score them on ``eval_z``."""
    aux_x, eval_x = _standardised(aux_z, eval_z)
    probe = linear_probe(aux_x, aux_y, num_classes, probe_epochs, seed)
    with torch.no_grad():
        probe_accuracy = _accuracy(probe(eval_x).argmax(dim=1), eval_y)
    centroids = class_centroids(aux_x, aux_y, num_classes, shots, seed)
    centroid_accuracy = _accuracy(torch.cdist(eval_x, centroids).argmin(dim=1), eval_y)
    chance = float(torch.bincount(eval_y, minlength=num_classes).max()) / len(eval_y)
    return LabelInference(probe_accuracy, centroid_accuracy, chance, shots)


def linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 200, seed: int = 0) -> nn.Linear:
    """Multinomial logistic regression, full batch with Adam and a little weight decay."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = nn.Linear(features.shape[1], num_classes)
    optimiser = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        optimiser.zero_grad()
        nn.functional.cross_entropy(probe(features), labels).backward()
        optimiser.step()
    return probe


def class_centroids(features: torch.Tensor, labels: torch.Tensor, num_classes: int, shots: int, seed: int = 0) -> torch.Tensor:
    """Each class's mean over ``shots`` of its samples chosen at random (a class absent: +inf, never nearest)."""
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.full((num_classes, features.shape[1]), float("inf"))
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members):
            chosen = members[torch.randperm(len(members), generator=generator)[:shots]]
            centroids[c] = features[chosen].mean(dim=0)
    return centroids


def _standardised(aux_z: torch.Tensor, eval_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten, and scale every feature by the auxiliary set's mean and std (the attacker's only statistics)."""
    aux, evaluated = aux_z.flatten(1).float(), eval_z.flatten(1).float()
    mean, std = aux.mean(dim=0), aux.std(dim=0) + 1e-6
    return (aux - mean) / std, (evaluated - mean) / std


def _accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predicted == labels).float().mean())
