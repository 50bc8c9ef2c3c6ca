"""U-shaped splits (``csl-u``, ``dsl-u``): exact gradients, what crosses, and the head on the client.

The halves are driven in process through the real codec (``tests/halves.py``); the apps'
evaluation, in which the client's head scores the test split, runs the real ServerApp and
ClientApp handlers (``tests/in_process_grid.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flsplit.config import ConfigError
from flsplit.optim import build_optimizer
from flsplit.split import build_u_slices
from flsplit.wire import Packet
from tests.halves import drive_round, make_client, make_config, make_server
from strategies import get_strategy
from strategies.u_shaped import head_cut_of

STEPS = 3


def _parameters(*modules: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for module in modules for p in module.parameters()]


def test_csl_u_trains_exactly_as_the_whole_network() -> None:
    # Prepare: one client, the same seed for the split slices and for a plain copy of the network
    config = make_config(strategy="csl-u")
    client = make_client(config, "csl-u", steps=STEPS)
    server = make_server(config, "csl-u", get_strategy("csl-u").server_slice(config))
    bottom, middle, head, _ = build_u_slices(config, head_cut_of(config))
    whole = nn.Sequential(bottom, middle, head)
    optimizer = build_optimizer(list(whole.parameters()), config)
    # Execute: a round of CSL-U, and the same batches through the whole network in plain PyTorch
    drive_round(get_strategy("csl-u").client(config), server, client)
    whole.train()
    for step in range(STEPS):
        x, y = client.batch(step)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(whole(x), y).backward()
        optimizer.step()
    # Assert: every parameter moved, and each slice equals its part of the whole network
    split = _parameters(client.bottom, server.top, client.head)
    plain = _parameters(whole)
    initial = _parameters(*build_u_slices(config, head_cut_of(config))[:3])
    assert len(split) == len(plain)
    assert all(not torch.equal(p, q) for p, q in zip(plain, initial) if p.dim() > 1)
    for got, want in zip(split, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_dsl_u_sends_only_dz2_up_and_nothing_back_for_the_bottom() -> None:
    # Prepare
    config = make_config(strategy="dsl-u")
    client = make_client(config, "dsl-u", steps=STEPS)
    server = make_server(config, "dsl-u", get_strategy("dsl-u").server_slice(config))
    middle_before = _parameters(server.top)
    head_before = _parameters(client.head)
    # Execute
    requests, uploads = drive_round(get_strategy("dsl-u").client(config), server, client)
    # Assert: z1 and dL/dz2 go up in turn, never a label; z2 comes down, never a gradient
    assert [sorted(u.tensors) for u in uploads] == [["activations"], ["gradients"]] * STEPS + [[]]
    assert [sorted(r.tensors) for r in requests] == [[]] + [["activations"], []] * STEPS
    assert all(u.info["batch_sizes"] == [16] for u in uploads[:-1])
    # ... and the head and the middle trained on the loss the client computed
    assert all(not torch.equal(p, q) for p, q in zip(_parameters(server.top), middle_before) if p.dim() > 1)
    assert all(not torch.equal(p, q) for p, q in zip(_parameters(client.head), head_before))
    assert server.take_metrics()["train_loss"] > 0


def test_csl_u_rebuilds_the_graphs_in_a_new_process() -> None:
    # Prepare: the same round twice, once dropping the client's live objects before every request
    config = make_config(strategy="csl-u")
    halves = []
    for drop_live in (False, True):
        client = make_client(config, "csl-u", steps=STEPS)
        server = make_server(config, "csl-u", get_strategy("csl-u").server_slice(config))
        # Execute
        drive_round(get_strategy("csl-u").client(config), server, client, drop_live=drop_live)
        halves.append(_parameters(client.bottom, server.top, client.head))
    # Assert: the graph is recomputed exactly, BatchNorm's statistics included
    for kept, rebuilt in zip(*halves):
        torch.testing.assert_close(kept, rebuilt)


@pytest.mark.parametrize("head_cut", ["2", "10", "stem"])
def test_a_head_cut_outside_the_top_slice_is_refused_by_name(head_cut: str) -> None:
    # Prepare: resnet20 cut after block 3 of 9
    config = make_config(strategy="csl-u", **{"head-cut": head_cut})
    # Execute / Assert
    with pytest.raises(ConfigError, match="head-cut: .* block index in 4..9"):
        get_strategy("csl-u").server_slice(config)


@pytest.mark.parametrize("head_cut", ["stage3.1", 8])
def test_head_cut_moves_blocks_from_the_middle_to_the_head(head_cut: str | int) -> None:
    # Prepare: a block name, or its index as a TOML integer
    config = make_config(strategy="csl-u", **{"head-cut": head_cut})
    # Execute
    modules = get_strategy("csl-u").client_modules(config)
    middle = get_strategy("csl-u").server_slice(config)
    # Assert: blocks 4..8 on the server; block 9 and the classifier in the client's head
    assert head_cut_of(config) == 8
    assert len(middle) == 5 and len(modules["head"]) == 2


def test_interleaved_clients_recompute_a_stale_middle_and_keep_its_batchnorm_statistics() -> None:
    # Prepare: two clients whose z1 both reach the middle before either dL/dz2 comes back
    config = make_config(strategy="csl-u")
    half = get_strategy("csl-u").client(config)
    server = make_server(config, "csl-u", get_strategy("csl-u").server_slice(config))
    clients = [make_client(config, "csl-u", steps=1, partition=i) for i in (0, 1)]
    server.begin_round(1)
    z2_down = {}
    for i, client in enumerate(clients):
        upload = half.train(Packet(info={"round": 1}), client, 1 << 30)
        z2_down[i] = server.on_upload(i, upload)
    statistics = [b.clone() for b in server.top.buffers()]
    middle_before = _parameters(server.top)
    # Execute: client 0's dL/dz2 steps the middle, so client 1's graph is stale when its own comes
    replies = [server.on_upload(i, half.train(z2_down[i], client, 1 << 30)) for i, client in enumerate(clients)]
    # Assert: both got dL/dz1; the middle took two steps; the recomputed forward left the running
    # statistics as the two real forward passes made them
    assert all(r is not None and r.gradients.shape == (16, 16, 32, 32) for r in replies)
    assert all(not torch.equal(p, q) for p, q in zip(_parameters(server.top), middle_before) if p.dim() > 1)
    assert all(torch.equal(b, s) for b, s in zip(server.top.buffers(), statistics))
