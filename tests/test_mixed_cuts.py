"""A cut per node: layer-wise averaging against a hand computation, rounds over clients of
different depths (in process, real handlers), and the refusals at config time and at hello."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message
from torch import nn

from flsplit.aggregation import build_aggregator
from flsplit.config import ConfigError
from flsplit.dataplane import DataPlaneServer
from flsplit.ledger import Ledger
from flsplit.optim import build_optimizer
from flsplit.protocol import HelloRequest
from flsplit.wire import module_state
from tests.in_process_grid import HANDLERS, InProcessGrid
from tests.test_stream_reliability import _route
from strategies import get_strategy, parse_config
from strategies.dsl import DSLServer
from strategies.splitfed_v1 import SplitFedV1Server
from apps import client_state, rounds, server_app
from apps.exchange import Exchange
from apps.mixed_cuts import average_layerwise, check_cuts
from apps.stream_exchange import StreamExchange

pytestmark = pytest.mark.usefixtures("task_identity")  # messages built outside a Flower runtime

# resnet20: cut 1 outputs 16x32x32, cut 4 (stage2.0) 32x16x16, so the two DSL heads differ in shape.
RAW = {"dataset": "synthetic", "model": "resnet20", "cut": 1, "cuts": "1,4", "batch-size": 16, "max-batches": 2, "eval-samples": 32}


@dataclass
class _Client:
    index: int
    partition_id: int
    num_examples: int
    cut_blocks: int
    activation_shape: tuple[int, ...] = ()


def _filled(value: float) -> dict[str, torch.Tensor]:
    return {"weight": torch.full((2, 2), value), "bias": torch.full((2,), value)}


def _linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 2)
    layer.load_state_dict(_filled(value))
    return layer


def _top(block_1: float, block_2: float) -> nn.Sequential:
    """The server's top slice, blocks 1 and 2, numbered as the network's (as a slice of it is)."""
    return nn.Sequential(OrderedDict({"1": _linear(block_1), "2": _linear(block_2)}))


def _slice(blocks: dict[int, float]) -> dict[str, torch.Tensor]:
    return {f"bottom.{block}.{name}": t for block, value in blocks.items() for name, t in _filled(value).items()}


def _value(weights: dict[str, torch.Tensor], prefix: str) -> float:
    """The one value a block's ``weight`` and ``bias`` were averaged to (they must agree)."""
    values = {float(v) for k, v in weights.items() if k.startswith(prefix) for v in v.flatten()}
    assert len(values) == 1, (prefix, values)
    return values.pop()


# Network blocks 0, 1, 2. Client A (1 example) cuts after block 0, client B (3 examples) after
# block 1; the server's top starts at block 1 (the shallowest cut is block 0).
A, B = _Client(0, 0, 1, 0), _Client(1, 1, 3, 1)
SLICES = {0: _slice({0: 1.0}), 1: _slice({0: 5.0, 1: 2.0})}


def _config() -> object:
    return parse_config({"dataset": "synthetic", "optimizer": "sgd"})


def test_shared_top_blocks_average_over_every_copy_weighted_by_the_examples_that_trained_it() -> None:
    # Prepare: the server's copy of block 1 trained on A's batches only (B's enter at block 2)
    top = _top(6.0, 7.0)
    server = DSLServer(top, build_optimizer(list(top.parameters()), _config()), _config())
    server.partition_sizes = {0: 1, 1: 3}
    # Execute
    back = average_layerwise(build_aggregator("FedAvg"), 1, SLICES, [A, B], server, shallowest=0)
    # Assert: block 0 = (1*1 + 5*3)/4; block 1 = (B's 2*3 + server's 6*1)/4; block 2 held by the server alone
    assert _value(back[0], "bottom.0.") == _value(back[1], "bottom.0.") == 4.0
    assert _value(back[1], "bottom.1.") == 3.0 and set(back[0]) == set(SLICES[0])
    assert _value(top.state_dict(), "1.") == 3.0 and _value(top.state_dict(), "2.") == 7.0


def test_splitfed_v1_copies_vote_only_for_the_blocks_their_client_trained() -> None:
    # Prepare: A's copy trained blocks 1-2, B's copy block 2 only (its block 1 is untouched: 100)
    config = parse_config({"dataset": "synthetic", "strategy": "splitfed-v1"})
    top = _top(0.0, 0.0)
    server = SplitFedV1Server(top, build_optimizer(list(top.parameters()), config), config)
    copies = {0: _top(6.0, 7.0), 1: _top(100.0, 11.0)}
    server.copies = {c: (m, build_optimizer(list(m.parameters()), config)) for c, m in copies.items()}
    server._trained = {0, 1}
    # Execute
    back = average_layerwise(build_aggregator("FedAvg"), 1, SLICES, [A, B], server, shallowest=0)
    # Assert: block 1 = (B's bottom 2*3 + A's copy 6*1)/4; block 2 = (7*1 + 11*3)/4; every copy continues from it
    assert _value(back[1], "bottom.1.") == 3.0
    for model in [top, *copies.values()]:
        assert _value(model.state_dict(), "1.") == 3.0 and _value(model.state_dict(), "2.") == 10.0
    assert not server._trained  # end_round's own average of the copies has nothing left to do


def _honest(message: Message, context: Context) -> Message:
    return HANDLERS[message.metadata.message_type](message, context)


def _one_round(tmp_path: Path, **overrides: object) -> tuple[dict, InProcessGrid, rounds.RoundDriver]:
    raw = RAW | overrides
    config = parse_config(raw)
    strategy = get_strategy(config.strategy)
    grid = InProcessGrid({100: _honest, 101: _honest}, raw)
    exchange = Exchange(grid, Ledger(), {100: 0, 101: 1}, timeout_s=5.0)
    clients = rounds.hello(exchange, [100, 101], HelloRequest(str(tmp_path)), config)
    check_cuts(clients, config, strategy)
    server = server_app.build_server(config, strategy)
    driver = rounds.RoundDriver(exchange, server, strategy, clients, config, build_aggregator("FedAvg"))
    return driver.run_round(1), grid, driver


def _bottom(grid: InProcessGrid, node_id: int, raw: dict) -> nn.Module:
    context = grid.contexts[node_id]
    config = client_state.as_node_runs_it(context, parse_config(raw))
    return client_state.load_slice(context, config, get_strategy(config.strategy))


@pytest.mark.parametrize("strategy", ["dsl", "cse-fsl", "hybrid", "splitfed-v1", "splitfed-v2"])
def test_an_averaged_round_leaves_one_network_every_client_path_computes(tmp_path: Path, strategy: str) -> None:
    # Execute
    raw = RAW | {"strategy": strategy, "client-sync": "average"}
    metrics, grid, driver = _one_round(tmp_path, **raw)
    # Assert: the deep client's blocks 2-4 equal the server's copy; both clients' block 0-1 agree
    shallow, deep = _bottom(grid, 100, raw), _bottom(grid, 101, raw)
    assert len(shallow.bottom) == 2 and len(deep.bottom) == 5
    for block in (2, 3, 4):
        server_copy = module_state(driver.server.top[block - 2])  # the top starts at block 2
        assert all(torch.equal(v, server_copy[k]) for k, v in module_state(deep.bottom[block]).items())
    for block in (0, 1):
        assert all(torch.equal(v, module_state(deep.bottom[block])[k]) for k, v in module_state(shallow.bottom[block]).items())
    assert set(metrics["test_accuracy_per_cut"]) == {"1", "4"} and metrics["evaluated_clients"] == [0, 1]
    assert metrics["train_samples"] == 2 * 2 * 16  # both clients' batches were served
    if strategy == "dsl":  # heads differ in shape, so each cut keeps its own
        assert shallow.aux.state_dict().keys() != deep.aux.state_dict().keys() or any(
            a.shape != b.shape for a, b in zip(shallow.aux.state_dict().values(), deep.aux.state_dict().values())
        )


@pytest.mark.parametrize("strategy", ["csl", "dsl"])
def test_unsynced_clients_of_two_depths_train_through_one_server_and_score_per_cut(tmp_path: Path, strategy: str) -> None:
    # Execute
    metrics, _, driver = _one_round(tmp_path, strategy=strategy)
    # Assert
    assert driver.server.entry_offsets == {0: 0, 1: 3}
    assert metrics["failed_clients"] == [] and metrics["train_samples"] == 2 * 2 * 16
    per_cut = metrics["test_accuracy_per_cut"]
    assert set(per_cut) == {"1", "4"} and per_cut["1"] == metrics["test_accuracy_per_client"][0]
    assert set(metrics["per_client_compute_s"]) == {"0", "1"} and all(s > 0 for s in metrics["per_client_busy_s"].values())


def test_a_cut_named_in_the_node_config_wins_and_a_bad_one_fails_hello_naming_it(tmp_path: Path) -> None:
    # Prepare
    raw = {k: v for k, v in RAW.items() if k != "cuts"} | {"strategy": "dsl"}
    grid = InProcessGrid({100: _honest, 101: _honest}, raw)
    grid.contexts[101].node_config["cut"] = "stage2.0"
    grid.contexts[100].node_config["cut"] = "zz"
    exchange = Exchange(grid, Ledger(), {100: 0, 101: 1}, timeout_s=5.0)
    # Execute / Assert: the bad one names the node-config key and the choices
    with pytest.raises(RuntimeError, match=r"node-config cut: 'zz' is not s, m, d"):
        rounds.hello(exchange, [100, 101], HelloRequest(str(tmp_path)), parse_config(raw))
    grid.contexts[100].node_config["cut"] = 1
    exchange = Exchange(grid, Ledger(), {100: 0, 101: 1}, timeout_s=5.0)
    clients = rounds.hello(exchange, [100, 101], HelloRequest(str(tmp_path)), parse_config(raw))
    assert [c.cut_blocks for c in clients] == [1, 4] and clients[1].activation_shape == (32, 16, 16)


def test_a_node_cut_before_the_servers_slice_or_a_strategy_of_one_cut_is_refused_at_hello() -> None:
    # Prepare: the run's shallowest cut is block 2
    config = parse_config({"dataset": "synthetic", "cut": 2, "strategy": "dsl"})
    shallow = [_Client(0, 0, 10, 1, (16, 32, 32)), _Client(1, 1, 10, 2, (16, 32, 32))]
    deep = [_Client(0, 0, 10, 2, (16, 32, 32)), _Client(1, 1, 10, 4, (32, 16, 16))]
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"client 0 cuts after block 1, before the server's slice.*set the run's cut"):
        check_cuts(shallow, config, get_strategy("dsl"))
    with pytest.raises(ConfigError, match=r"outputs \[16, 32, 32\] at block 4.*expects \[32, 16, 16\]"):
        check_cuts([deep[0], _Client(1, 1, 10, 4, (16, 32, 32))], config, get_strategy("dsl"))
    with pytest.raises(ConfigError, match=r"node-config cut: clients with different cuts.*'fsl-sage' needs one cut"):
        check_cuts(deep, parse_config({"dataset": "synthetic", "cut": 2, "strategy": "fsl-sage"}), get_strategy("fsl-sage"))
    check_cuts(deep, config, get_strategy("dsl"))  # a deeper node is served


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"strategy": "fsl-sage", "cuts": "s,d"}, r"cuts: clients with different cuts \(blocks \[2, 4\]\), but strategy 'fsl-sage'"),
        ({"strategy": "csl-u", "cuts": "s,d"}, r"but strategy 'csl-u' needs one cut"),
        ({"strategy": "csl", "cuts": "s,d", "client-sync": "relay"}, r'client-sync = "relay" hands one slice'),
        ({"strategy": "dsl", "cuts": "s,q"}, r"cuts: entry 1 \(partition 1\): 'q' is not s, m, d"),
    ],
)
def test_mixed_cuts_that_cannot_run_are_refused_before_training(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"dataset": "synthetic"} | raw)


def test_clients_of_two_depths_train_over_the_stream(tmp_path: Path) -> None:
    # Prepare: the real data plane on loopback; each training message's handler holds its round open in a thread
    raw = RAW | {"strategy": "csl", "transport": "stream"}
    config, strategy = parse_config(raw), get_strategy("csl")
    grid = InProcessGrid(dict.fromkeys([100, 101]), raw)
    grid.handlers = {node: _route(_honest, grid) for node in (100, 101)}
    messages = Exchange(grid, Ledger(), {100: 0, 101: 1}, timeout_s=10.0)
    with StreamExchange(messages, DataPlaneServer(tls=False), handshake_timeout_s=10.0) as exchange:
        clients = rounds.hello(exchange, [100, 101], HelloRequest(str(tmp_path)), config)
        driver = rounds.RoundDriver(exchange, server_app.build_server(config, strategy), strategy, clients, config, build_aggregator("FedAvg"))
        # Execute
        metrics = driver.run_round(1)
    # Assert: every batch of both depths went up and got its gradient on the stream
    assert metrics["failed_clients"] == [] and metrics["train_samples"] == 2 * 2 * 16
    assert metrics["bytes_down_gradients"] == metrics["bytes_up_activations"] > 0
    assert set(metrics["test_accuracy_per_cut"]) == {"1", "4"}
