"""Label leakage from the gradients a U-shaped client returns: the norm and direction attacks.

Li et al., "Label Leakage and Protection in Two-party Split Learning" (ICLR 2022). Whoever
receives ``dL/dz`` for a batch can score every sample without seeing a label:

- the **norm attack** scores a sample by ``||dL/dz||``: a sample the model gets wrong, typically
  of a rarer class, has a larger gradient;
- the **direction attack** scores it by the cosine between its gradient and the gradient of one
  *reference sample* whose label the attacker knows: for softmax cross-entropy,
  ``dL/dlogits = p - onehot(y)``, so samples of the reference's class point the same way.

Both are binary; with several classes each class is scored one-vs-rest and the AUCs averaged.
An AUC of 0.5 is chance, 1.0 is every label recovered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LeakAUC:
    """One attack's one-vs-rest leak AUC: the mean over classes and each class's own."""

    mean: float
    per_class: dict[int, float]
    #: The direction attack's reference sample of each class (its index in the batch given).
    reference_index: dict[int, int] | None = None

    @property
    def best(self) -> float:
        """The most exposed class's AUC. The norm attack's mean is 0.5 whenever classes are
        balanced (one score ranks them all), so its signal shows in the spread, not the mean."""
        return max(self.per_class.values())


def roc_auc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative.

    The Mann-Whitney statistic with ties counted as half (average ranks).
    """
    positives = positives.bool().flatten()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative sample")
    scores = scores.double().flatten()
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # Average the ranks of tied scores.
    unique, inverse = torch.unique(scores, return_inverse=True)
    rank_sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (rank_sums / counts)[inverse]
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def norm_attack(gradients: torch.Tensor, labels: torch.Tensor) -> LeakAUC:
    """Leak AUC of scoring every sample by its gradient's norm, per class one-vs-rest."""
    scores = gradients.flatten(1).norm(dim=1)
    per_class = {c: roc_auc(scores, labels == c) for c in _classes_with_both(labels)}
    return LeakAUC(_mean(per_class), per_class)


def direction_attack(gradients: torch.Tensor, labels: torch.Tensor) -> LeakAUC:
    """Leak AUC of scoring samples by cosine to a reference sample of known label, per class.

    The reference of class ``c`` is the first sample of class ``c`` in ``gradients`` (its index
    is reported); it is left out of its own scoring.
    """
    flat = torch.nn.functional.normalize(gradients.flatten(1).double(), dim=1)
    per_class, references = {}, {}
    for c in _classes_with_both(labels):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < 2:
            continue  # the reference would be the class's only positive
        reference = int(members[0])
        others = torch.arange(len(labels)) != reference
        scores = flat[others] @ flat[reference]
        per_class[c] = roc_auc(scores, labels[others] == c)
        references[c] = reference
    return LeakAUC(_mean(per_class), per_class, references)


def _classes_with_both(labels: torch.Tensor) -> list[int]:
    present = sorted(int(c) for c in torch.unique(labels))
    if len(present) < 2:
        raise ValueError("the leak AUC needs gradients of at least two classes")
    return present


def _mean(per_class: dict[int, float]) -> float:
    if not per_class:
        raise ValueError("no class has two samples: the direction attack needs a reference and a positive")
    return sum(per_class.values()) / len(per_class)
