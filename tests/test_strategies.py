"""CSL and DSL halves through the real codec, against plain single-process PyTorch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flsplit.config import RunConfig
from flsplit.data import PartitionLoader, load_dataset
from flsplit.optim import build_optimizer
from flsplit.split import activation_shape, build_halves
from flsplit.wire import Packet
from tests.halves import BIG, drive_round, make_client, make_server, through_wire
from tests.halves import make_config as _config
from strategies import ClientSlice, get_strategy, strategy_names
from strategies.csl import CSLClient
from strategies.dsl import DSLClient, DSLServer


def _client(config: RunConfig, with_aux: bool = False, steps: int = 1) -> tuple[ClientSlice, nn.Module]:
    _, top, _ = build_halves(config)
    return make_client(config, "dsl" if with_aux else "csl", steps), top


def _csl_steps(config: RunConfig, steps: int, drop_live: bool = False) -> tuple[ClientSlice, nn.Module]:
    client, top = _client(config, steps=steps)
    drive_round(CSLClient(config), make_server(config, "csl", top), client, drop_live=drop_live)
    return client, top


def test_one_csl_step_through_the_codec_equals_one_unsplit_backprop_step() -> None:
    # Prepare
    config = _config()
    ref_bottom, ref_top, _ = build_halves(config)
    reference = nn.Sequential(*ref_bottom, *ref_top)
    optimizer = build_optimizer(list(reference.parameters()), config)
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


@pytest.mark.slow  # over 5 s
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
    server = DSLServer(top, build_optimizer(list(top.parameters()), config), config)
    # Execute
    upload = DSLClient(config).train(Packet(), client, BIG)
    reply = server.on_upload(0, through_wire(upload, server.upload_specs(activation_shape(config))))
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
    assert {"csl", "dsl", "fsl-sage", "cse-fsl", "splitfed-v1", "splitfed-v2", "hybrid", "fedavg"} <= set(strategy_names())
    assert get_strategy("strategies.dsl:DSL") is get_strategy("dsl")
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="cannot import"):
        get_strategy("no_such_module.Thing")
