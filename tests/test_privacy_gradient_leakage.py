"""The norm and direction label attacks on returned gradients (Li et al., ICLR 2022)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flsplit.privacy.gradient_leakage import direction_attack, norm_attack, roc_auc


def test_roc_auc_is_one_for_a_perfect_ranking_half_for_ties_and_zero_reversed():
    # Prepare
    positives = torch.tensor([0, 0, 1, 1])

    # Execute, Assert
    assert roc_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), positives) == 1.0
    assert roc_auc(torch.ones(4), positives) == 0.5
    assert roc_auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), positives) == 0.0
    assert roc_auc(torch.tensor([0.1, 0.5, 0.5, 0.9]), positives) == pytest.approx(0.875)


def _early_softmax_gradients(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dz of a freshly initialised softmax head on 200 cut activations of 10 classes."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(200, 32, generator=generator).requires_grad_(True)
    labels = torch.arange(200) % 10
    torch.manual_seed(seed)
    head = nn.Sequential(nn.ReLU(), nn.Linear(32, 10))
    nn.functional.cross_entropy(head(z), labels, reduction="sum").backward()
    return z.grad, labels


def test_the_direction_attack_recovers_labels_from_an_early_softmax_models_gradients():
    # Prepare
    gradients, labels = _early_softmax_gradients()

    # Execute
    leak = direction_attack(gradients, labels)

    # Assert
    assert leak.mean > 0.95
    assert leak.reference_index == {c: c for c in range(10)}  # the first sample of each class


def test_the_norm_attack_is_near_chance_when_classes_are_balanced_and_unlearnt():
    # Prepare
    gradients, labels = _early_softmax_gradients()

    # Execute
    leak = norm_attack(gradients, labels)

    # Assert: one score ranks all ten balanced classes, so their AUCs average to exactly 0.5
    assert set(leak.per_class) == set(range(10))
    assert leak.mean == pytest.approx(0.5)
    assert leak.best < 0.95


def test_the_norm_attack_separates_a_rare_class_the_model_gets_wrong():
    # Prepare: binary, the model confidently predicts the majority class 0
    generator = torch.Generator().manual_seed(3)
    labels = (torch.rand(300, generator=generator) < 0.1).long()
    logits = torch.stack([torch.full((300,), 3.0), torch.zeros(300)], dim=1).requires_grad_(True)

    # Execute
    nn.functional.cross_entropy(logits, labels, reduction="sum").backward()
    leak = norm_attack(logits.grad, labels)

    # Assert
    assert leak.per_class[1] == 1.0
