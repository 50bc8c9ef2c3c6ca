"""A U-shaped server records the dL/dz2 it receives: at kept rounds only, bounded, with each row's batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flsplit import checkpoint
from flsplit.config import ConfigError
from flsplit.privacy.gradient_record import gradient_record_path
from tests.halves import drive_round, make_client, make_config, next_round
from strategies import get_strategy
from apps import server_app


@pytest.mark.parametrize("strategy", ["csl-u", "dsl-u"])
def test_the_server_records_the_first_batches_it_receives_in_kept_rounds_only(tmp_path: Path, strategy: str) -> None:
    # Prepare: rounds of 3 batches; round 2 kept, 2 batches recorded; client index 0 is partition 3
    config = make_config(**{"strategy": strategy, "cut": 1, "keep-rounds": "2", "record-gradient-batches": 2})
    server = server_app.build_server(config, get_strategy(strategy))
    server.record_gradients(tmp_path, {0: 3})
    half, client = get_strategy(strategy).client(config), make_client(config, strategy, steps=3)
    drive_round(half, server, client, round_number=1)
    server.end_round(1, None)
    next_round(client, 3)

    # Execute
    _, uploads = drive_round(half, server, client, round_number=2)
    server.end_round(2, None)

    # Assert: one file, for round 2 and partition 3, written atomically (no temp file left)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["gradients", "round-2-client-3.pt"]
    recorded = checkpoint.load(gradient_record_path(tmp_path, 2, 3))
    received = [u.gradients for u in uploads if "gradients" in u.tensors]
    assert len(received) == 3
    # the first two batches exactly as received, each row with its batch's position and row
    assert torch.equal(recorded["gradients"], torch.cat(received[:2]))
    assert recorded["round"] == 2 and recorded["partition"] == 3
    assert recorded["round_batch"].tolist() == [0] * 16 + [1] * 16
    assert recorded["row"].tolist() == list(range(16)) * 2


def test_no_gradient_is_recorded_without_keep_rounds_or_with_zero_batches(tmp_path: Path) -> None:
    # Prepare
    for name, keys in {"unkept": {}, "zero": {"keep-rounds": "all", "record-gradient-batches": 0}}.items():
        config = make_config(**{"strategy": "csl-u", "cut": 1} | keys)
        server = server_app.build_server(config, get_strategy("csl-u"))
        server.record_gradients(tmp_path / name, {0: 0})

        # Execute
        drive_round(get_strategy("csl-u").client(config), server, make_client(config, "csl-u", steps=2))
        server.end_round(1, None)

    # Assert
    assert list(tmp_path.rglob("*.pt")) == []


def test_a_negative_record_gradient_batches_is_refused_naming_the_key() -> None:
    # Execute, Assert
    with pytest.raises(ConfigError, match="record-gradient-batches"):
        make_config(**{"strategy": "csl-u", "record-gradient-batches": -1})


def test_a_resumed_run_may_record_another_number_of_batches_as_it_may_keep_other_rounds() -> None:
    # Prepare
    saved = make_config(strategy="csl-u").as_run_config()
    resumed = make_config(**{"strategy": "csl-u", "record-gradient-batches": 8, "keep-rounds": "3"})

    # Execute, Assert
    assert server_app.changed_keys(resumed, saved) == []
