"""Which tensor reaches which party, per strategy: ``docs/privacy.md``'s table, pinned by the ledger.

Each built-in strategy runs one round of the real ServerApp and ClientApp handlers in process
(``tests/in_process_grid.py``); the ledger's byte counts by kind and direction must say "yes"
exactly where the table does. A U-shaped run is also watched message by message: no test
label reaches the ServerApp.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict

from flsplit.results import read_metrics
from tests.in_process_grid import HANDLERS, InProcessGrid, run_server_app
from strategies import get_strategy, strategy_names
from apps import client_state, server_app

pytestmark = [pytest.mark.usefixtures("task_identity"), pytest.mark.slow]  # a few seconds each

PRIVACY = Path(__file__).parent.parent / "docs" / "privacy.md"
#: One round of 3 batches of 16 per client, 2 clients (as ``test_strategy_traffic``).
TINY = {
    "dataset": "synthetic", "model": "resnet20", "num-server-rounds": 1, "max-batches": 3,
    "batch-size": 16, "eval-samples": 48, "chunk-mb": 1.5,
}
#: ``hybrid`` gets the server's gradient for batches k-1, 2k-1, ... (``hybrid-k`` = 5): it needs 5.
LONGER = {"hybrid": {"max-batches": 5}}
#: The table's columns after strategy and topology, and the ledger fields that decide each.
COLUMNS = {
    "activations up": ("bytes_up_activations",),
    "labels up": ("bytes_up_labels",),
    "gradients down": ("bytes_down_gradients",),
    "activations down": ("bytes_down_activations",),
    "gradients up": ("bytes_up_gradients",),
    "model weights": ("bytes_model_sync", "bytes_model_relay", "bytes_down_aux_model"),
    "test labels up": ("bytes_eval_up_labels",),
}


def _table() -> dict[str, dict[str, bool]]:
    """The rows of the section "Which tensor reaches which party": strategy -> column -> yes/no."""
    section = PRIVACY.read_text().split("## Which tensor reaches which party", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| `[a-z0-9-]+` \|", line)]
    table = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 2 + len(COLUMNS), row
        assert set(cells[2:]) <= {"yes", "no"}, row
        table[cells[0].strip("`")] = {column: cell == "yes" for column, cell in zip(COLUMNS, cells[2:])}
    return table


def test_the_table_names_every_built_in_strategy() -> None:
    # Prepare: the strategies of the strategies package (a test's or an example's plug-in may be registered too)
    built_in = [name for name in strategy_names() if get_strategy(name).__module__.startswith("strategies.")]
    # Execute / Assert
    assert sorted(_table()) == built_in


@pytest.mark.parametrize("strategy", sorted(_table()))
def test_the_ledger_shows_what_the_table_says_crosses(tmp_path: Path, strategy: str) -> None:
    # Execute
    [metrics] = run_server_app(TINY | {"run-name": strategy, "strategy": strategy} | LONGER.get(strategy, {}), tmp_path, through_protobuf=True)
    # Assert
    assert metrics["failed_clients"] == []
    crossed = {column: any(metrics[field] > 0 for field in fields) for column, fields in COLUMNS.items()}
    assert crossed == _table()[strategy]


@pytest.mark.parametrize("strategy", ["csl-u", "dsl-u"])
def test_no_test_label_reaches_the_server_in_u_shaped_evaluation(tmp_path: Path, strategy: str) -> None:
    # Prepare: the real apps in process; record every reply the ServerApp receives to an evaluate message
    evaluate_replies: list[Message] = []

    def handler(message: Message, context: Context) -> Message:
        reply = HANDLERS[message.metadata.message_type](message, context)
        if message.metadata.message_type == "evaluate":
            evaluate_replies.append(reply)
        return reply

    config = TINY | {"strategy": strategy, "run-name": strategy, "results-dir": str(tmp_path)}
    client_state.drop_cached_slices()
    grid = InProcessGrid({101: handler, 102: handler}, config, through_protobuf=True)
    # Execute
    server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    # Assert: test activations came up, and not one label; the clients' heads scored all 48 samples
    [metrics] = read_metrics(tmp_path / strategy / "metrics.jsonl")
    assert any("activations" in reply.content.array_records for reply in evaluate_replies)
    assert all("labels" not in reply.content.array_records for reply in evaluate_replies)
    assert metrics["bytes_eval_up_labels"] == 0 and metrics["bytes_eval_down_activations"] > 0
    assert math.isfinite(metrics["test_accuracy"]) and math.isfinite(metrics["test_loss"])
    assert metrics["evaluated_clients"] == [0, 1]
    scored = [int(reply.content.config_records["info"]["samples"]) for reply in evaluate_replies if "samples" in reply.content.config_records["info"]]
    assert sum(scored) == 2 * 48
