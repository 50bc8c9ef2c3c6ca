"""Peak-memory measurement: the allocator reading, autograd's saved bytes, and held state."""

from __future__ import annotations

import torch
from torch import nn

from flsplit.memory import measure, state_bytes

MIB = 1 << 20


def _model() -> tuple[nn.Sequential, torch.optim.SGD]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_state_bytes_counts_parameters_gradients_and_momentum_once() -> None:
    # Prepare
    layer = nn.Linear(10, 10)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    before = state_bytes([layer, layer], [optimizer])
    # Execute
    layer(torch.ones(2, 10)).sum().backward()
    optimizer.step()
    after = state_bytes([layer], [optimizer])
    # Assert
    assert before == 110 * 4
    assert after == 3 * 110 * 4  # weights, gradients, momentum buffers


def test_peak_sees_a_temporary_allocation_that_is_freed_inside_the_window() -> None:
    # Prepare
    model, _ = _model()
    # Execute
    with measure([model], []) as reading:
        scratch = torch.ones(8 * MIB)  # 32 MiB, freed before the window closes
        total = float(scratch.sum())
        del scratch
    # Assert
    assert total == 8 * MIB
    assert 32 * MIB <= reading.peak - state_bytes([model]) < 40 * MIB


def test_training_step_peak_covers_what_autograd_saved_and_frees_it_after_backward() -> None:
    # Prepare
    model, optimizer = _model()
    # Execute
    with measure([model], [optimizer]) as reading:
        loss = model(torch.randn(64, 3, 32, 32)).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    # Assert: input, two conv outputs and two ReLU outputs are saved: 64*32*32*(3+16+16+16) floats
    # at most (ReLU's output may share storage with nothing else), and at least the input.
    assert 64 * 32 * 32 * 3 * 4 <= reading.saved <= 64 * 32 * 32 * 51 * 4
    assert reading.peak >= state_bytes([model], [optimizer]) + reading.saved
    assert reading.held_after == 0


def test_graph_kept_for_a_later_backward_is_reported_as_held() -> None:
    # Prepare
    model, optimizer = _model()
    # Execute: forward only, as a CSL client does before the gradient arrives
    with measure([model], [optimizer]) as forward:
        z = model(torch.randn(16, 3, 32, 32))
    with measure([model], [optimizer], held=forward.held_after) as backward:
        optimizer.zero_grad(set_to_none=True)
        z.backward(torch.ones_like(z))
        optimizer.step()
    # Assert
    assert forward.held_after == forward.saved > 0
    assert backward.peak >= forward.held_after
    assert backward.held_after == 0


def test_saved_bytes_are_the_most_alive_at_once_not_the_sum_over_steps() -> None:
    # Prepare
    model, optimizer = _model()

    def step() -> None:
        loss = model(torch.randn(16, 3, 32, 32)).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # Execute
    with measure([model], [optimizer]) as one:
        step()
    with measure([model], [optimizer]) as three:
        for _ in range(3):
            step()
    # Assert
    assert three.saved == one.saved > 0
