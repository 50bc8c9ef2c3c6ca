"""CSE-FSL, SplitFed V1/V2, the FedAvg baseline and the example plug-in, through the codec."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flsplit.optim import build_optimizer
from flsplit.split import build_halves
from flsplit.wire import Packet, PayloadError, weights_of
from tests.halves import drive_round, make_client, make_config, make_server, next_round
from strategies import get_strategy
from strategies.cse_fsl import CSEFSLClient
from strategies.csl import CSL, CSLClient
from strategies.dsl import DSLClient
from strategies.fedavg import FedAvgClient


def test_cse_fsl_uploads_every_qth_batch_of_each_round_and_averages_slice_and_head() -> None:
    # Prepare: rounds of 5 batches, upload every 2nd (local iterations 0, 2, 4)
    config = make_config(strategy="cse-fsl", **{"upload-every": 2})
    client = make_client(config, "cse-fsl", steps=5)
    server = make_server(config, "cse-fsl", build_halves(config)[1])
    aux_before = copy.deepcopy(client.aux.state_dict())
    # Execute
    _, first = drive_round(CSEFSLClient(config), server, client)
    next_round(client, steps=5)
    _, second = drive_round(CSEFSLClient(config), server, client, round_number=2)
    # Assert
    assert [u.info["batch_sizes"] for u in first + second] == [[16, 16, 16], [16, 16, 16]]
    assert any(not torch.equal(v, aux_before[k]) for k, v in client.aux.state_dict().items())  # head trains locally
    strategy = get_strategy("cse-fsl")
    assert strategy.aggregates(config) and set(strategy.synced_modules(client.modules())) == {"bottom", "aux"}


def test_splitfed_v2_is_csl_that_always_aggregates() -> None:
    strategy = get_strategy("splitfed-v2")
    assert issubclass(strategy, CSL) and strategy.client is CSLClient and strategy.server is CSL.server
    assert strategy.aggregates(make_config(**{"aggregate-clients": False}))
    assert not CSL.aggregates(make_config(**{"aggregate-clients": False}))


def test_splitfed_v1_trains_one_copy_per_client_and_averages_them_by_partition_size() -> None:
    # Prepare: client 0 trains 2 batches of a partition of 64, client 1 one batch of 192
    config = make_config(strategy="splitfed-v1")
    _, top, _ = build_halves(config)
    server = make_server(config, "splitfed-v1", top)
    server.partition_sizes = {0: 64, 1: 192}
    initial = copy.deepcopy(top.state_dict())
    clients = [make_client(config, "splitfed-v1", steps=2, partition=0), make_client(config, "splitfed-v1", steps=1, partition=1)]
    # Execute
    server.begin_round(1)
    for client_id, client in enumerate(clients):
        requests, _ = drive_round(CSLClient(config), server, client, client_id=client_id, begin=False)
        assert all("gradients" in r.tensors for r in requests[1:])
    copies = [{k: v.clone() for k, v in weights_of({"top": server.copies[c][0]}).items()} for c in (0, 1)]
    shared_before_averaging = copy.deepcopy(server.top.state_dict())
    server.end_round(1, None)
    # Assert: the copies trained apart, not the shared top...
    assert all(torch.equal(initial[k], v) for k, v in shared_before_averaging.items())
    assert any(not torch.equal(copies[0][k], copies[1][k]) for k in copies[0])
    expected = {k: (64 * copies[0][k] + 192 * copies[1][k]) / 256 for k in copies[0]}  # as the slices are
    for key, value in weights_of({"top": server.top}).items():  # ...which becomes their average
        assert torch.allclose(value, expected[key], atol=1e-6), key
        assert torch.equal(weights_of({"top": server.copies[1][0]})[key], value)


def test_splitfed_v1_server_copies_survive_a_checkpoint() -> None:
    # Prepare
    config = make_config(strategy="splitfed-v1")
    server = make_server(config, "splitfed-v1", build_halves(config)[1])
    server.partition_sizes = {0: 64}
    drive_round(CSLClient(config), server, make_client(config, "splitfed-v1", steps=2))
    server.end_round(1, None)
    # Execute
    restored = make_server(config, "splitfed-v1", build_halves(config)[1])
    restored.load_state_dict(copy.deepcopy(server.state_dict()))
    # Assert: the copy's momentum comes back with it
    restored_optimizer = restored._copy(0)[1]
    saved = server.copies[0][1].state_dict()["state"]
    assert all(torch.equal(restored_optimizer.state_dict()["state"][i]["momentum_buffer"], s["momentum_buffer"]) for i, s in saved.items())


def test_fedavg_client_trains_the_whole_network_as_plain_pytorch_does() -> None:
    # Prepare
    config = make_config(strategy="fedavg")
    client = make_client(config, "fedavg", steps=3)
    bottom, top, _ = build_halves(config)
    reference = nn.Sequential(*bottom, *top)
    optimizer = build_optimizer(list(reference.parameters()), config)
    # Execute
    _, uploads = drive_round(FedAvgClient(config), make_server(config, "fedavg", build_halves(config)[1]), client)
    for step in range(3):
        x, y = client.loader.batch(step)
        optimizer.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        optimizer.step()
    # Assert: one message, no tensors up, the same weights as the unsplit loop
    assert len(uploads) == 1 and not uploads[0].tensors and uploads[0].info["local_samples"] == 48
    trained = list(client.bottom.state_dict().values()) + list(client.aux.state_dict().values())
    for got, want in zip(trained, reference.state_dict().values()):
        assert torch.allclose(got.float(), want.float(), atol=1e-6)


def test_fedavg_server_adopts_the_averaged_upper_part_and_rejects_activations() -> None:
    # Prepare
    config = make_config(strategy="fedavg")
    server = make_server(config, "fedavg", build_halves(config)[1])
    averaged = {k: torch.full_like(v, 0.5) for k, v in weights_of({"aux": build_halves(config)[1]}).items()}
    # Execute
    server.end_round(1, {"bottom.0.conv.weight": torch.zeros(1)} | averaged)
    # Assert
    for key, value in weights_of({"aux": server.top}).items():
        assert torch.equal(value, averaged[key])
    with pytest.raises(PayloadError, match="no tensors"):
        server.check_upload(Packet({"activations": {"z": torch.zeros(1, 16, 32, 32)}, "labels": {"y": torch.zeros(1, dtype=torch.int64)}}, {"batch_sizes": [1]}))


@pytest.mark.parametrize("scale", [0.1, 0.3])
def test_plugin_strategy_from_a_dotted_path_adds_noise_of_its_own_key_to_uploads_only(scale: float) -> None:
    # Prepare: the plug-in's own key, read from the run config
    plugin = get_strategy("examples.noisy_activations:NoisyDSL")
    config = make_config(strategy="examples.noisy_activations:NoisyDSL", **({"noisy-scale": scale} if scale != 0.1 else {}))
    noisy, clean = make_client(config, plugin, steps=2), make_client(config, "dsl", steps=2)
    # Execute
    _, noisy_uploads = drive_round(plugin.client(config), make_server(config, plugin, build_halves(config)[1]), noisy)
    _, clean_uploads = drive_round(DSLClient(config), make_server(config, "dsl", build_halves(config)[1]), clean)
    # Assert: the client trained exactly as DSL; what went up carries noise of scale x std(z)
    for a, b in zip(noisy.bottom.state_dict().values(), clean.bottom.state_dict().values()):
        assert torch.equal(a, b)
    z_noisy, z_clean = noisy_uploads[0].tensors["activations"]["z"], clean_uploads[0].tensors["activations"]["z"]
    ratio = float((z_noisy - z_clean).std() / z_clean.std())
    assert 0.9 * scale < ratio < 1.1 * scale
