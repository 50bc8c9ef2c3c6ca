"""CSL and DSL halves through the real codec, against plain single-process PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flsplit.config import parse_run_config
from flsplit.data import PartitionLoader, load_dataset
from flsplit.split import activation_shape, build_halves, sgd
from flsplit.wire import Packet, decode, encode
from strategies import ClientSlice, get_strategy, strategy_names
from strategies.csl import CSLClient, CSLServer
from strategies.dsl import DSLClient, DSLServer

BIG = 1 << 30


def _config(**overrides: object):  # noqa: ANN202
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 3, "batch-size": 16, "lr": 0.1, "weight-decay": 5e-4} | overrides
    return parse_run_config(raw)


def _client(config, with_aux: bool = False, steps: int = 1) -> tuple[ClientSlice, nn.Module]:  # noqa: ANN001
    bottom, top, aux = build_halves(config)
    params = list(bottom.parameters()) + (list(aux.parameters()) if with_aux else [])
    loader = PartitionLoader(load_dataset("synthetic"), np.arange(64), config.batch_size, config.seed, 0)
    client = ClientSlice(bottom, aux if with_aux else None, sgd(params, config), loader, {"step": 0, "round_end": steps, "round": 1})
    return client, top


def _through_wire(packet: Packet, specs) -> Packet:  # noqa: ANN001
    return decode(encode(packet), specs)


def _csl_steps(config, steps: int, drop_live: bool = False) -> tuple[ClientSlice, nn.Module]:  # noqa: ANN001
    client, top = _client(config, steps=steps)
    half, server = CSLClient(config), CSLServer(top, sgd(list(top.parameters()), config), config)
    shape = activation_shape(config)
    upload = half.train(Packet(), client, BIG)
    while not upload.info["done"]:
        down = server.on_upload(0, _through_wire(upload, server.upload_specs(shape)))
        if drop_live:
            client.live.clear()  # as if the next message ran in another process
        upload = half.train(_through_wire(down, half.download_specs(shape)), client, BIG)
    return client, top


def test_one_csl_step_through_the_codec_equals_one_unsplit_backprop_step() -> None:
    # Prepare
    config = _config()
    ref_bottom, ref_top, _ = build_halves(config)
    reference = nn.Sequential(*ref_bottom, *ref_top)
    optimizer = sgd(list(reference.parameters()), config)
    loader = PartitionLoader(load_dataset("synthetic"), np.arange(64), config.batch_size, config.seed, 0)
    x, y = loader.batch(0)
    # Execute
    client, top = _csl_steps(config, steps=1)
    optimizer.zero_grad()
    F.cross_entropy(reference(x), y).backward()
    optimizer.step()
    # Assert
    split_state = list(client.bottom.state_dict().values()) + list(top.state_dict().values())
    ref_state = list(reference.state_dict().values())
    assert len(split_state) == len(ref_state)
    for got, want in zip(split_state, ref_state):
        assert torch.allclose(got.float(), want.float(), atol=1e-6, rtol=0)


def test_csl_gives_the_same_weights_when_the_graph_is_rebuilt_in_another_process() -> None:
    # Prepare
    config = _config()
    # Execute
    cached, cached_top = _csl_steps(config, steps=3)
    replayed, replayed_top = _csl_steps(config, steps=3, drop_live=True)
    # Assert (BatchNorm running statistics included)
    for a, b in zip(cached.bottom.state_dict().values(), replayed.bottom.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=0)
    for a, b in zip(cached_top.state_dict().values(), replayed_top.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=0)


def test_dsl_server_sends_nothing_back_and_trains_the_top() -> None:
    # Prepare
    config = _config()
    client, top = _client(config, with_aux=True, steps=4)
    before = [p.detach().clone() for p in top.parameters()]
    server = DSLServer(top, sgd(list(top.parameters()), config), config)
    # Execute
    upload = DSLClient(config).train(Packet(), client, BIG)
    reply = server.on_upload(0, _through_wire(upload, server.upload_specs(activation_shape(config))))
    # Assert
    assert reply is None and DSLServer.replies_to_uploads is False
    assert upload.info["done"] and upload.info["batch_sizes"] == [16, 16, 16, 16]
    assert any(not torch.equal(b, p) for b, p in zip(before, top.parameters()))


def test_dsl_client_updates_its_slice_from_the_auxiliary_loss_alone() -> None:
    config = _config()
    client, _ = _client(config, with_aux=True, steps=1)
    before = [p.detach().clone() for p in client.bottom.parameters()]
    DSLClient(config).train(Packet(), client, BIG)
    assert all(not torch.equal(b, p) for b, p in zip(before, client.bottom.parameters()))


def test_dsl_chunks_are_bounded_in_bytes() -> None:
    # Prepare: one batch of activations is 16 x 16*32*32 floats = 1 MiB at cut 3
    config = _config()
    client, _ = _client(config, with_aux=True, steps=4)
    half = DSLClient(config)
    # Execute
    uploads = []
    while not (uploads and uploads[-1].info["done"]):
        uploads.append(half.train(Packet(), client, max_bytes=2 << 20))
    # Assert
    assert [u.info["batch_sizes"] for u in uploads] == [[16, 16], [16, 16]]


def test_registry_names_and_dotted_plugin_paths() -> None:
    assert {"csl", "dsl"} <= set(strategy_names())
    assert get_strategy("strategies.dsl:DSL") is get_strategy("dsl")
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="cannot import"):
        get_strategy("no_such_module.Thing")
