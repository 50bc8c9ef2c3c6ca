"""FSL-SAGE: gradient estimation and alignment, the client's step, and the server's schedule."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flsplit.config import RunConfig
from flsplit.data import PartitionLoader, load_dataset
from flsplit.optim import build_optimizer
from flsplit.split import build_halves
from flsplit.wire import Packet, weights_of
from tests.halves import drive_round, make_client, make_config, make_server, next_round
from strategies.alignment import agreement, align, cut_gradient, true_gradients
from strategies.csl import CSLServer
from strategies.fsl_sage import FSLSAGEClient


def _buffer(config: RunConfig, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed buffer: the seeded bottom slice's activations of synthetic training batches."""
    bottom, _, _ = build_halves(config)
    loader = PartitionLoader(load_dataset("synthetic"), np.arange(samples), config.batch_size, config.seed, 0)
    batches = [loader.batch(step) for step in range(-(-samples // config.batch_size))]
    with torch.no_grad():
        return bottom.train()(torch.cat([x for x, _ in batches])), torch.cat([y for _, y in batches])


@pytest.mark.slow  # over 5 s
@pytest.mark.parametrize("head", ["pooled", "linear", "resnet-stage"])
def test_alignment_brings_the_estimated_gradient_closer_to_the_servers(head: str, record_property: pytest.RecordProperty) -> None:
    # Prepare: a fixed buffer, the seeded top slice's true gradients, a seeded estimator
    torch.manual_seed(0)
    config = make_config(**{"aux-head": head})
    _, top, aux = build_halves(config)
    z, y = _buffer(config, samples=32)
    target = true_gradients(top, z, y, config.batch_size)
    before = agreement(aux, z, y, target, config.batch_size)
    # Execute
    align(aux, torch.optim.Adam(aux.parameters(), lr=1e-3), z, y, target, epochs=50, batch_size=config.batch_size)
    after = agreement(aux, z, y, target, config.batch_size)
    # Assert
    numbers = f"{head} head: cosine {before.cosine:.4f} -> {after.cosine:.4f}, MSE {before.mse:.4e} -> {after.mse:.4e}"
    print(numbers)
    record_property("alignment", numbers)
    assert after.cosine > before.cosine + 0.02
    assert after.mse < before.mse


def test_true_gradients_are_what_a_csl_server_sends_and_leave_the_top_untouched() -> None:
    # Prepare
    config = make_config()
    _, top, _ = build_halves(config)
    z, y = _buffer(config, samples=32)
    state = copy.deepcopy(top.state_dict())
    reference = copy.deepcopy(top)
    csl = CSLServer(reference, torch.optim.SGD(reference.parameters(), lr=0.0), config)
    # Execute
    grads = true_gradients(top, z, y, config.batch_size)
    sent = csl.train_batches(Packet({"activations": {"z": z}, "labels": {"y": y}}, {"batch_sizes": [16, 16]}), keep_input_grad=True)
    # Assert
    assert torch.allclose(grads, sent, atol=1e-9)
    assert all(torch.equal(v, state[k]) for k, v in top.state_dict().items())


@pytest.mark.slow  # over 5 s
def test_client_steps_its_slice_with_the_estimated_gradient_and_uploads_every_qth_batch() -> None:
    # Prepare: 7 batches, upload every 3rd (local iterations 0, 3, 6)
    config = make_config(strategy="fsl-sage", **{"upload-every": 3})
    client = make_client(config, "fsl-sage", steps=7)
    reference = copy.deepcopy(client.bottom)
    aux_before = {k: v.clone() for k, v in client.aux.named_parameters()}
    optimizer = build_optimizer(list(reference.parameters()), config)
    # Execute: round 2, which is not an alignment round (align-every 10: rounds 1, 11, ...)
    _, uploads = drive_round(FSLSAGEClient(config), make_server(config, "fsl-sage", build_halves(config)[1]), client, round_number=2)
    for step in range(7):  # the same steps by hand: backpropagate d CE(aux(z), y)/dz
        x, y = client.loader.batch(step)
        z = reference(x)
        optimizer.zero_grad()
        z.backward(cut_gradient(client.aux, z, y))
        optimizer.step()
    # Assert
    assert [u.info["batch_sizes"] for u in uploads] == [[16, 16, 16]]
    assert uploads[0].info["local_samples"] == 7 * 16
    for got, want in zip(client.bottom.state_dict().values(), reference.state_dict().values()):
        assert torch.allclose(got.float(), want.float(), atol=1e-6)
    # not trained locally (batch norm's running statistics move, as in the reference's train mode)
    assert all(torch.equal(v, aux_before[k]) for k, v in client.aux.named_parameters())


def test_server_aligns_from_round_one_every_l_rounds_on_the_first_upload_as_the_reference_does() -> None:
    # Prepare: align every 2 rounds (the reference's t = 0, 2, ...: rounds 1, 3), 3 batches a round
    config = make_config(strategy="fsl-sage", **{"upload-every": 1, "align-every": 2, "align-epochs": 2, "align-buffer": 40})
    half, client = FSLSAGEClient(config), make_client(config, "fsl-sage", steps=3)
    server = make_server(config, "fsl-sage", build_halves(config)[1])
    requests, uploads, metrics = {}, {}, {}
    # Execute
    for round_number in (1, 2, 3):
        if round_number > 1:
            next_round(client, steps=3)
        requests[round_number], uploads[round_number] = drive_round(half, server, client, round_number=round_number)
        server.end_round(round_number, None)
        metrics[round_number] = server.take_metrics()
    # Assert: in an alignment round the first batch goes up alone, the aligned model comes back
    # in reply and the client trains the rest of the round with it
    assert [u.info["batch_sizes"] for u in uploads[1]] == [[16], [16, 16]]
    assert [u.info["batch_sizes"] for u in uploads[2]] == [[16, 16, 16]]
    assert [u.info["batch_sizes"] for u in uploads[3]] == [[16], [16, 16]]
    carried = {r: [bool(q.tensors) for q in qs] for r, qs in requests.items()}
    assert carried == {1: [False, True], 2: [False], 3: [False, True]}
    assert metrics[1]["align_after_cosine"] is not None and metrics[2]["align_s"] is None
    assert metrics[3]["align_after_mse"] is not None
    assert [metrics[r]["align_index"] for r in (1, 2, 3)] == [1, None, 2]
    estimator = server.estimators[0]
    params = sum(p.numel() for p in estimator.parameters())
    assert all(metrics[r]["estimator_params"] == params for r in (1, 2, 3))
    assert metrics[1]["estimator_bytes"] == 4 * sum(v.numel() for k, v in estimator.state_dict().items() if "num_batches" not in k)
    sent = requests[3][1].tensors["aux_model"]
    assert all(torch.equal(sent[k], v) for k, v in weights_of({"aux": server.estimators[0]}).items())
    # the client holds the aligned weights (its batch-norm statistics moved on while it trained)
    assert all(torch.equal(sent[f"aux.{k}"], v) for k, v in client.aux.named_parameters())
    # One Adam state per estimator, kept across the two alignments (2 epochs = 2 steps each)
    adam = server.align_optimizers[0]
    assert all(int(state["step"]) == 4 for state in adam.state.values())
    buffer = server.buffers[0]
    assert len(buffer.y) == 40 and torch.equal(buffer.z[-16:], uploads[3][-1].tensors["activations"]["z"][-16:])


def test_server_state_survives_a_checkpoint() -> None:
    # Prepare
    config = make_config(strategy="fsl-sage", **{"upload-every": 1, "align-every": 1, "align-epochs": 1})
    server = make_server(config, "fsl-sage", build_halves(config)[1])
    drive_round(FSLSAGEClient(config), server, make_client(config, "fsl-sage", steps=2))
    server.begin_round(2)
    # Execute
    restored = make_server(config, "fsl-sage", build_halves(config)[1])
    restored.load_state_dict(copy.deepcopy(server.state_dict()))
    # Assert
    assert torch.equal(restored.buffers[0].z, server.buffers[0].z) and torch.equal(restored.buffers[0].y, server.buffers[0].y)
    for k, v in server.estimators[0].state_dict().items():
        assert torch.equal(restored.estimators[0].state_dict()[k], v)
    saved, loaded = server.align_optimizers[0].state_dict(), restored.align_optimizers[0].state_dict()
    assert saved["state"].keys() == loaded["state"].keys() and saved["state"]
    for index, state in saved["state"].items():
        assert all(torch.equal(loaded["state"][index][name], value) for name, value in state.items())
    assert F.cross_entropy(restored.top(server.buffers[0].z), server.buffers[0].y) == F.cross_entropy(server.top(server.buffers[0].z), server.buffers[0].y)


def test_estimator_is_scored_out_of_sample_on_each_later_rounds_first_upload() -> None:
    # Prepare: align in round 1 only; 2 batches a round, every batch uploaded
    config = make_config(strategy="fsl-sage", **{"upload-every": 1, "align-every": 5, "align-epochs": 1, "align-buffer": 32})
    half, client = FSLSAGEClient(config), make_client(config, "fsl-sage", steps=2)
    server = make_server(config, "fsl-sage", build_halves(config)[1])
    drive_round(half, server, client, round_number=1)
    server.end_round(1, None)
    first = server.take_metrics()
    next_round(client, steps=2)
    estimator, top = copy.deepcopy(server.estimators[0]), copy.deepcopy(server.top)
    # Execute
    _, uploads = drive_round(half, server, client, round_number=2)
    server.end_round(2, None)
    second = server.take_metrics()
    # Assert: no estimator before round 1's alignment; in round 2 the score is that of the
    # aligned estimator on round 2's first upload, against the top as it was before training on it
    z, y = uploads[0].activations, uploads[0].labels
    expected = agreement(estimator, z, y, true_gradients(top, z, y, config.batch_size), config.batch_size)
    assert first["held_out_cosine"] is None and second["align_after_cosine"] is None
    assert second["held_out_cosine"] == pytest.approx(expected.cosine) and second["held_out_mse"] == pytest.approx(expected.mse)
