"""Label inference from activations: beats chance when z is class-separable, not when it is noise."""

from __future__ import annotations

import torch

from flsplit.privacy.label_inference import infer_labels


def _activations(n: int, separation: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 4, 4, 4) activations: a class prototype times ``separation`` plus unit noise."""
    prototypes = torch.randn(10, 4, 4, 4, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n) % 10
    return separation * prototypes[labels] + torch.randn(n, 4, 4, 4, generator=generator), labels


def test_both_attackers_beat_chance_on_class_separable_activations():
    # Prepare
    generator = torch.Generator().manual_seed(0)
    aux_z, aux_y = _activations(200, 0.5, generator)
    eval_z, eval_y = _activations(300, 0.5, generator)

    # Execute
    found = infer_labels(aux_z, aux_y, eval_z, eval_y, num_classes=10, shots=10)

    # Assert
    assert found.chance == 0.1
    assert found.probe_accuracy > 0.6
    assert found.centroid_accuracy > 0.6


def test_both_attackers_stay_near_chance_when_activations_carry_no_label():
    # Prepare
    generator = torch.Generator().manual_seed(1)
    aux_z, aux_y = _activations(200, 0.0, generator)
    eval_z, eval_y = _activations(300, 0.0, generator)

    # Execute
    found = infer_labels(aux_z, aux_y, eval_z, eval_y, num_classes=10, shots=10)

    # Assert
    assert found.probe_accuracy < 0.2
    assert found.centroid_accuracy < 0.2
