"""The family as its references define it: optimizers and schedules, SplitFed's serving order
and weights, FSL-SAGE's model and estimator, and the presets that reproduce the papers."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message

from flsplit.aggregation import build_aggregator
from flsplit.config import ConfigError, parse_run_config
from flsplit.ledger import Ledger
from flsplit.models import CutPoint, build_head, cut_shape, mirror_stage_blocks, next_stage_blocks, resolve_cut
from flsplit.optim import build_optimizer, round_lr
from flsplit.protocol import HelloRequest
from flsplit.split import build_halves
from tests.in_process_grid import InProcessGrid
from strategies import get_strategy, parse_config
from apps import client_app, rounds
from apps.exchange import Exchange

PRESETS = Path(__file__).resolve().parents[1] / "experiments" / "presets"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [0.1, 0.1, 0.1, 0.1]),
        ("cosine", [0.1 * (1 + math.cos(math.pi * r / 4)) / 2 for r in range(4)]),
        ("step", [0.1, 0.1, 0.01, 0.001]),
    ],
)
def test_learning_rate_of_each_round_follows_the_schedule(schedule: str, expected: list[float]) -> None:
    # Prepare
    config = parse_run_config({"lr": 0.1, "lr-schedule": schedule, "num-server-rounds": 4})
    # Execute
    rates = [round_lr(config, r) for r in range(1, 5)]
    # Assert
    assert rates == pytest.approx(expected)


def test_optimizer_key_builds_adam_with_weight_decay_or_sgd_with_momentum() -> None:
    # Prepare
    params = [torch.nn.Parameter(torch.zeros(3))]
    # Execute
    adam = build_optimizer(params, parse_run_config({"optimizer": "adam", "lr": 1e-3, "weight-decay": 1e-4}))
    sgd = build_optimizer(params, parse_run_config({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}))
    # Assert
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 1e-3 and adam.defaults["weight_decay"] == 1e-4
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9


def test_bad_optimizer_schedule_or_serve_order_names_the_key_and_the_choices() -> None:
    # Execute
    with pytest.raises(ConfigError) as err:
        parse_run_config({"optimizer": "lion", "lr-schedule": "linear", "serve-order": "random"})
    # Assert
    text = str(err.value)
    assert "optimizer" in text and "'adam'" in text
    assert "lr-schedule" in text and "'cosine'" in text
    assert "serve-order" in text and "'sequential'" in text


def _serving_order(strategy: str) -> tuple[list[int], float]:
    """Which client each upload the server trained on came from; and the server's round lr."""
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 2, "batch-size": 16, "max-batches": 3,
           "strategy": strategy, "lr-schedule": "cosine", "num-server-rounds": 4}
    config = parse_run_config(raw)
    grid = InProcessGrid({100: _client, 101: _client}, raw)
    exchange = Exchange(grid, Ledger(), {100: 0, 101: 1})
    clients = rounds.hello(exchange, [100, 101], HelloRequest(), config)
    _, top, _ = build_halves(config)
    server = get_strategy(strategy).server(top, build_optimizer(list(top.parameters()), config), config)
    served: list[int] = []
    on_upload = server.on_upload
    server.on_upload = lambda cid, upload: served.append(cid) or on_upload(cid, upload)  # type: ignore[method-assign]
    rounds.RoundDriver(exchange, server, get_strategy(strategy), clients, config, build_aggregator("FedAvg")).train(2)
    return served, server.optimizer.param_groups[0]["lr"]


def _client(message: Message, context: Context) -> Message:
    handler = {"query.hello": client_app.hello, "train.step": client_app.train_step}[message.metadata.message_type]
    return handler(message, context)


@pytest.mark.usefixtures("task_identity")
def test_splitfed_v2_serves_each_clients_whole_round_before_the_next_as_its_references() -> None:
    # Execute
    sequential, lr = _serving_order("splitfed-v2")
    interleaved, _ = _serving_order("csl")
    # Assert
    assert sequential == [0, 0, 0, 1, 1, 1]
    assert interleaved == [0, 1, 0, 1, 0, 1]
    assert lr == pytest.approx(round_lr(parse_run_config({"lr-schedule": "cosine", "num-server-rounds": 4}), 2))


def test_serve_order_key_overrides_the_strategys_own_order() -> None:
    # Prepare
    v2 = get_strategy("splitfed-v2")
    # Execute / Assert
    assert v2.serves_sequentially(parse_run_config({"strategy": "splitfed-v2"}))
    assert not v2.serves_sequentially(parse_run_config({"strategy": "splitfed-v2", "serve-order": "interleaved"}))
    assert get_strategy("dsl").serves_sequentially(parse_run_config({"serve-order": "sequential"}))


def test_resnet18_is_the_fsl_sage_reference_network_cut_after_layer2() -> None:
    # Execute
    bottom, top, aux = build_halves(parse_run_config({"model": "resnet18", "cut": 4, "strategy": "fsl-sage"}))
    # Assert: 11.2 M parameters in all; 128 x 4 x 4 activations at the cut; the aux model is a
    # fresh layer3 (two basic blocks, 128 -> 256) with pooling and a linear layer
    assert _params(bottom) + _params(top) == pytest.approx(11.17e6, rel=0.01)
    assert cut_shape(4, "resnet18") == (128, 4, 4)
    assert bottom(torch.zeros(2, 3, 32, 32)).shape == (2, 128, 4, 4)
    assert _params(aux) == pytest.approx(2.10e6, rel=0.01)
    assert aux(torch.zeros(2, 128, 4, 4)).shape == (2, 10)


def test_resnet_stage_head_is_the_next_stage_of_the_cut_network_freshly_initialised() -> None:
    # Prepare: resnet20 cut s = 2 blocks, inside stage 1 (16 x 32 x 32); the next stage is
    # stage 2, three blocks to 32 channels at 16 x 16
    cut = resolve_cut("s", "resnet20")
    config = parse_run_config({"model": "resnet20", "cut": "s", "aux-head": "resnet-stage"})
    bottom, top, aux = build_halves(config)
    # Execute
    stage = list(next_stage_blocks("resnet20", cut))
    # Assert
    assert cut == 2 and stage == [4, 5, 6]
    assert _params(aux) == sum(_params(top[i - cut - 1]) for i in stage) + 32 * 10 + 10
    assert any(not torch.equal(a, b) for a, b in zip(aux[0].parameters(), top[4 - cut - 1].parameters()))  # fresh weights
    assert aux(bottom(torch.zeros(2, 3, 32, 32))).shape == (2, 10)
    # a cut inside the last stage gets the rest of that stage
    assert list(next_stage_blocks("resnet20", 8)) == [9]


def test_fsl_sage_defaults_to_the_resnet_stage_estimator_and_others_to_the_pooled_head() -> None:
    # Execute / Assert
    assert parse_run_config({"strategy": "fsl-sage"}).head == "resnet-stage"
    assert parse_run_config({"strategy": "dsl"}).head == "pooled"
    assert parse_run_config({"strategy": "fsl-sage", "aux-head": "linear"}).head == "linear"


def test_heads_are_built_from_the_cut_shape_of_a_dry_run() -> None:
    # Prepare
    cut = CutPoint.of("resnet18", 4, 10)
    # Execute
    head = build_head("linear", cut)
    # Assert
    assert cut.shape == (128, 4, 4) and head[1].in_features == 128 * 16


@pytest.mark.parametrize("preset", ["fsl-sage-paper.toml", "cse-fsl-official.toml"])
def test_method_presets_are_valid_run_configs(preset: str) -> None:
    # Prepare
    raw = tomllib.loads((PRESETS / preset).read_text())
    # Execute
    config = parse_config(raw)
    # Assert
    if preset.startswith("fsl-sage"):
        assert config.optimizer == "adam"
        assert (config.model, config.cut_blocks, config.head) == ("resnet18", 4, "resnet-stage")
        assert (config.lr, config.weight_decay, config.params.upload_every, config.params.align_every) == (1e-3, 1e-4, 5, 10)
        assert (config.params.align_buffer, config.params.align_epochs, config.partition, config.dirichlet_alpha) == (1000, 100, "dirichlet", 1.0)
        fsl_sage = get_strategy("fsl-sage")  # the reference's order: one client after another, 0, 1, 2
        assert fsl_sage.serving_groups(config, 5, 3) == [[0], [1], [2]] and fsl_sage.aggregates(config)
    else:
        assert (config.strategy, config.head, config.optimizer, config.momentum) == ("cse-fsl", "linear", "sgd", 0.0)
        assert (config.lr, config.batch_size, config.params.upload_every) == (0.15, 50, 5)


def test_resume_accepts_keys_a_run_did_not_record_at_their_default_and_keeps_a_schedules_length() -> None:
    # Prepare: a checkpointed run's config.json from before the optimizer keys existed
    from apps.server_app import changed_keys

    config = parse_config({"strategy": "fsl-sage", "lr-schedule": "cosine", "num-server-rounds": 30})
    saved = {k: v for k, v in config.as_run_config().items() if k not in ("optimizer", "align-lr")}
    # Execute / Assert
    assert changed_keys(config, saved) == []
    assert changed_keys(parse_config({"strategy": "fsl-sage", "optimizer": "adam", "lr-schedule": "cosine", "num-server-rounds": 30}), saved) == ["optimizer"]
    assert changed_keys(parse_config({"strategy": "fsl-sage", "lr-schedule": "cosine", "num-server-rounds": 40}), saved) == ["num-server-rounds"]
    constant = parse_config({"strategy": "fsl-sage", "num-server-rounds": 30})
    assert changed_keys(parse_config({"strategy": "fsl-sage", "num-server-rounds": 40}), constant.as_run_config()) == []


def test_mirror_head_is_the_tops_first_stage_whether_or_not_the_cut_ends_a_stage() -> None:
    # Execute
    inside = list(mirror_stage_blocks("resnet20", 2))  # cut s: 2 of stage 1's 3 blocks
    at_end = list(mirror_stage_blocks("resnet18", 4))  # after layer2, as the FSL-SAGE reference
    head = build_halves(parse_run_config({"strategy": "fsl-sage", "aux-head": "resnet-mirror"}))[2]
    # Assert: the rest of stage 1 and all of stage 2; at a stage's end, the next stage alone
    assert inside == [3, 4, 5, 6]
    assert at_end == list(next_stage_blocks("resnet18", 4)) == [5, 6]
    assert head(torch.zeros(2, 16, 32, 32)).shape == (2, 10)
