"""Hybrid (α·L_aux + λ·L, server gradient every k batches): its two limits and its combined step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from flsplit.optim import build_optimizer
from flsplit.split import build_halves
from tests.halves import drive_round, make_client, make_config, make_server, next_round
from strategies.csl import CSLClient
from strategies.dsl import DSLClient
from strategies.hybrid import HybridClient


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6, rtol=0), name


@pytest.mark.slow  # over 5 s
def test_lambda_zero_is_dsl_weight_for_weight() -> None:
    # Prepare: two rounds of 3 batches, chunks of two batches
    hybrid_config = make_config(strategy="hybrid", **{"hybrid-lambda": 0.0, "hybrid-k": 1})
    dsl_config = make_config(strategy="dsl")
    runs = {}
    # Execute
    for name, config, half in (("hybrid", hybrid_config, HybridClient(hybrid_config)), ("dsl", dsl_config, DSLClient(dsl_config))):
        client = make_client(config, name, steps=3)
        server = make_server(config, name, build_halves(config)[1])
        _, first = drive_round(half, server, client, max_bytes=2 << 20)
        next_round(client, steps=3)
        _, second = drive_round(half, server, client, round_number=2, max_bytes=2 << 20)
        runs[name] = (client, server, first + second)
    # Assert
    (hybrid, hybrid_server, hybrid_uploads), (dsl, dsl_server, dsl_uploads) = runs["hybrid"], runs["dsl"]
    assert hybrid_server.replies_to_uploads is False  # pipelined, as DSL
    assert [u.info["batch_sizes"] for u in hybrid_uploads] == [u.info["batch_sizes"] for u in dsl_uploads] == [[16, 16], [16], [16, 16], [16]]
    for a, b in zip(hybrid_uploads, dsl_uploads):
        assert torch.equal(a.tensors["activations"]["z"], b.tensors["activations"]["z"])
    _assert_same(hybrid.bottom, dsl.bottom)
    _assert_same(hybrid.aux, dsl.aux)
    _assert_same(hybrid_server.top, dsl_server.top)


@pytest.mark.slow  # over 5 s
def test_k_one_without_auxiliary_loss_is_csl_also_when_the_graph_is_rebuilt() -> None:
    for drop_live in (False, True):
        # Prepare
        hybrid_config = make_config(strategy="hybrid", **{"hybrid-lambda": 1.0, "hybrid-k": 1, "hybrid-aux-weight": 0.0})
        csl_config = make_config(strategy="csl")
        hybrid, csl = make_client(hybrid_config, "hybrid", steps=3), make_client(csl_config, "csl", steps=3)
        hybrid_server = make_server(hybrid_config, "hybrid", build_halves(hybrid_config)[1])
        csl_server = make_server(csl_config, "csl", build_halves(csl_config)[1])
        # Execute
        hybrid_requests, _ = drive_round(HybridClient(hybrid_config), hybrid_server, hybrid, drop_live=drop_live)
        csl_requests, _ = drive_round(CSLClient(csl_config), csl_server, csl, drop_live=drop_live)
        # Assert: one batch per message and a gradient for every batch, as in CSL
        assert len(hybrid_requests) == len(csl_requests) == 4
        for a, b in zip(hybrid_requests[1:], csl_requests[1:]):
            assert torch.equal(a.tensors["gradients"]["dz"], b.tensors["gradients"]["dz"])
        _assert_same(hybrid.bottom, csl.bottom)
        _assert_same(hybrid_server.top, csl_server.top)


@pytest.mark.slow  # over 5 s
def test_server_gradient_comes_back_for_every_kth_batch_only() -> None:
    # Prepare: 7 batches, k = 3: gradients for local iterations 2 and 5
    config = make_config(strategy="hybrid", **{"hybrid-lambda": 0.5, "hybrid-k": 3})
    client = make_client(config, "hybrid", steps=7)
    server = make_server(config, "hybrid", build_halves(config)[1])
    # Execute
    requests, uploads = drive_round(HybridClient(config), server, client)
    # Assert
    assert [u.info["batch_sizes"] for u in uploads] == [[16, 16, 16], [16, 16, 16], [16]]
    assert [u.info["gradient_for_last"] for u in uploads] == [True, True, False]
    assert [tuple(r.tensors["gradients"]["dz"].shape) for r in requests[1:]] == [(16, 16, 32, 32)] * 2
    assert sum(u.info["local_samples"] for u in uploads) == 7 * 16  # every batch, gradient or not


def test_gradient_step_minimises_aux_loss_plus_lambda_times_server_loss() -> None:
    # Prepare: k = 1, so the first batch's step is the combined one
    config = make_config(strategy="hybrid", **{"hybrid-lambda": 0.5, "hybrid-k": 1, "hybrid-aux-weight": 2.0})
    client = make_client(config, "hybrid", steps=1)
    _, top, _ = build_halves(config)
    bottom, aux, reference_top = copy.deepcopy(client.bottom), copy.deepcopy(client.aux), copy.deepcopy(top)
    optimizer = build_optimizer(list(bottom.parameters()) + list(aux.parameters()), config)
    x, y = client.loader.batch(0)
    # Execute
    drive_round(HybridClient(config), make_server(config, "hybrid", top), client)
    z = bottom(x)
    server_loss = F.cross_entropy(reference_top(z), y)  # the top slice's weights before its step
    optimizer.zero_grad()
    (2.0 * F.cross_entropy(aux(z), y) + 0.5 * server_loss).backward()
    optimizer.step()
    # Assert
    _assert_same(client.bottom, bottom)
    _assert_same(client.aux, aux)
