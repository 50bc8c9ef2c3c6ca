"""The eval-precision driver counts the predictions a wire dtype changes against fp32's."""

from __future__ import annotations

import torch

from experiments import eval_precision


def test_a_near_tie_that_bf16_rounds_away_counts_as_changed_and_fp32_changes_none() -> None:
    # Prepare: two logits 1e-4 apart (class 1 wins in fp32); bf16 keeps 8 bits of mantissa
    n = 600  # more than one batch of the driver
    images = torch.stack([torch.ones(n), torch.full((n,), 1.0 + 1e-4)], dim=1)
    labels = torch.ones(n, dtype=torch.long)
    # Execute
    rows = {r["wire dtype"]: r for r in eval_precision.changed_predictions(torch.nn.Identity(), torch.nn.Identity(), images, labels)}
    # Assert
    assert (rows["fp32"]["changed argmaxes"], rows["fp32"]["test acc. (%)"]) == (0, 100.0)
    assert (rows["bf16"]["changed argmaxes"], rows["bf16"]["test acc. (%)"]) == (n, 0.0)
