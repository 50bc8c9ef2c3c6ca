"""The client's slice survives a trip through Flower's ``context.state`` with nothing lost."""

import torch
from flwr.app import Context, RecordDict

from flsplit.config import parse_run_config
from flsplit.wire import Packet, module_state
from strategies.csl import CSL
from strategies.dsl import DSL, DSLClient
from apps import client_state


def _context(run_config: dict) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 1, "num-partitions": 2},
        state=RecordDict(),
        run_config=run_config,
    )


def _trained_and_saved(raw: dict):  # noqa: ANN202 - (ClientSlice, Context, RunConfig)
    """A DSL client trained 3 steps and saved to its context.state."""
    config = parse_run_config(raw)
    context = _context(raw)
    client = client_state.load_slice(context, config, DSL)
    client.counters["round_end"] = 3
    DSLClient(config).train(Packet(), client, 1 << 30)
    client_state.save_slice(context, client)
    return client, context, config


def test_rebuilt_slice_equals_the_saved_one_weights_momentum_and_counters() -> None:
    # Prepare
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 2, "batch-size": 16}
    client, context, config = _trained_and_saved(raw)
    # Execute: drop the process cache, as when the next message runs elsewhere
    client_state.drop_cached_slices()
    rebuilt = client_state.load_slice(context, config, DSL)
    # Assert
    assert rebuilt is not client
    assert rebuilt.counters == client.counters == {"step": 3, "round_end": 3, "round": 0}
    # (BatchNorm's step counter is not kept: with momentum-style running stats it is unused)
    for module, other in ((client.bottom, rebuilt.bottom), (client.aux, rebuilt.aux)):
        for a, b in zip(module_state(module).values(), module_state(other).values()):
            assert torch.equal(a, b)
    saved_momentum = [client.optimizer.state[p]["momentum_buffer"] for g in client.optimizer.param_groups for p in g["params"]]
    rebuilt_momentum = [rebuilt.optimizer.state[p]["momentum_buffer"] for g in rebuilt.optimizer.param_groups for p in g["params"]]
    assert all(torch.equal(a, b) for a, b in zip(saved_momentum, rebuilt_momentum))


def test_cache_serves_the_live_slice_only_while_it_is_the_saved_version() -> None:
    # Prepare
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 2}
    config = parse_run_config(raw)
    context = _context(raw)
    client = client_state.load_slice(context, config, CSL)
    client_state.save_slice(context, client)
    # Execute / Assert: same version -> same object
    assert client_state.load_slice(context, config, CSL) is client
    # another process saved a newer version into the state
    other = _context(raw)
    other.state = context.state
    client_state.drop_cached_slices()
    newer = client_state.load_slice(other, config, CSL)
    client_state.save_slice(other, newer)
    client_state._LIVE[(1, 7)] = ("stale-version", client)
    assert client_state.load_slice(context, config, CSL) is not client


def test_cache_keeps_only_the_most_recently_used_slices() -> None:
    # Prepare
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 2}
    config = parse_run_config(raw)
    client_state.drop_cached_slices()
    contexts = [_context(raw) for _ in range(3)]
    for node_id, context in enumerate(contexts):
        context.node_id = node_id
    slices = [client_state.load_slice(c, config, CSL) for c in contexts]
    # Execute: node 0 is used again after node 1, so node 1 is the least recently used
    client_state.save_slice(contexts[0], slices[0], keep=2)
    client_state.save_slice(contexts[1], slices[1], keep=2)
    assert client_state.load_slice(contexts[0], config, CSL) is slices[0]
    client_state.save_slice(contexts[2], slices[2], keep=2)
    # Assert
    assert [node for _, node in client_state._LIVE] == [0, 2]
    assert client_state.load_slice(contexts[1], config, CSL) is not slices[1]
    assert client_state.load_slice(contexts[2], config, CSL) is slices[2]


def test_adam_state_of_a_client_survives_the_trip_through_context_state() -> None:
    # Prepare: a DSL client trained 3 Adam steps, saved to context.state
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 2, "batch-size": 16, "optimizer": "adam", "lr": 1e-3}
    client, context, config = _trained_and_saved(raw)
    # Execute: rebuild from the state alone, as a new process would
    client_state.drop_cached_slices()
    rebuilt = client_state.load_slice(context, config, DSL)
    # Assert: every moment and step count is back
    assert isinstance(rebuilt.optimizer, torch.optim.Adam)
    saved = [client.optimizer.state[p] for g in client.optimizer.param_groups for p in g["params"]]
    loaded = [rebuilt.optimizer.state[p] for g in rebuilt.optimizer.param_groups for p in g["params"]]
    assert saved and all(set(a) == {"step", "exp_avg", "exp_avg_sq"} for a in saved)
    for a, b in zip(saved, loaded):
        assert all(torch.equal(a[name], b[name]) for name in a)
