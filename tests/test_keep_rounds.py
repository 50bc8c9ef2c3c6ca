"""keep-rounds: the checkpoints of chosen rounds outlive the two-round pruning, for flsplit leak."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from flsplit.checkpoint import client_checkpoint_path
from flsplit.config import ConfigError
from tests.halves import make_client, make_config
from apps import client_state, server_app


def _context(clients_dir: Path) -> Context:
    context = Context(run_id=1, node_id=3, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(), run_config={})
    context.state[client_state.RUN] = ConfigRecord({"clients_dir": str(clients_dir)})
    return context


@pytest.mark.parametrize(("keep_rounds", "expected"), [("", {4, 5}), ("2, 1", {1, 2, 4, 5}), ("all", {1, 2, 3, 4, 5})])
def test_a_client_prunes_checkpoints_older_than_two_rounds_except_the_kept_ones(tmp_path: Path, keep_rounds: str, expected: set[int]) -> None:
    # Prepare
    config = make_config(**{"keep-rounds": keep_rounds})
    client = make_client(config, "dsl")
    context = _context(tmp_path)

    # Execute
    for round_number in range(1, 6):
        client_state.write_checkpoint(context, config, client, round_number)

    # Assert
    kept = {n for n in range(1, 6) if client_checkpoint_path(tmp_path, n, 0).exists()}
    assert kept == expected


def test_keep_rounds_normalises_its_list_and_rejects_what_is_not_one() -> None:
    # Prepare, Execute
    config = make_config(**{"keep-rounds": " 10,1 ,5,5"})

    # Assert
    assert config.keep_rounds == "1,5,10"
    assert config.keeps_round(5) and not config.keeps_round(2)
    with pytest.raises(ConfigError, match="keep-rounds: expected round numbers"):
        make_config(**{"keep-rounds": "1,last"})
    with pytest.raises(ConfigError, match="keep-rounds"):
        make_config(**{"keep-rounds": "0"})


def test_a_resumed_run_may_keep_other_rounds() -> None:
    # Prepare
    saved = make_config().as_run_config()

    # Execute
    changed = server_app.changed_keys(make_config(**{"keep-rounds": "3", "resume": True}), saved)

    # Assert
    assert changed == []
