"""The round-trip breakdown of ``experiments.deployment_latency``, from stamps written by hand."""

import json
import statistics
from pathlib import Path

import pytest

from experiments import deployment_latency as latency


def _stamp(directory: Path, event: str, **fields: object) -> None:
    with open(directory / f"{event}-1.jsonl", "a") as out:
        out.write(json.dumps({"event": event, **fields}) + "\n")


def _one_message(tmp_path: Path, server_waits_at: float) -> tuple[Path, Path]:
    server, node = tmp_path / "server", tmp_path / "node0"
    server.mkdir(parents=True)
    node.mkdir(parents=True)
    _stamp(server, "server_push", message_id="m1", started=100.0, t=100.05)
    _stamp(server, "server_wait", message_id="m1", t=server_waits_at)
    _stamp(server, "server_pull", message_id="m1", t=103.5)
    (node / "supernode-0.log").write_text(
        "100.2 INFO Receiving: train message (ID: m1)\n"
        "100.5 INFO Runtime.PullTaskInput\n"
        "102.1 INFO Sending: reply\n"
        "102.4 INFO Sent successfully\n"
    )
    _stamp(node, "clientapp", message_id="m1", process_started=100.3, import_started=100.4, imported=100.4, entered=100.7, ready=101.0, t=102.0)
    return server, node


def test_a_reply_waiting_for_the_busy_server_is_not_counted_as_transfer(tmp_path: Path) -> None:
    # Prepare: the reply reaches the SuperLink at 102.4; the server turns to it at 103.0
    server, node = _one_message(tmp_path, server_waits_at=103.0)
    # Execute
    [stamps] = latency.journeys(server, [node])
    parts = latency.parts_of(stamps)
    # Assert
    assert parts["reply held in the SuperLink while the ServerApp is busy (the other client)"] == pytest.approx(600)
    assert parts["SuperLink to ServerApp pull (transfer, poll, object-pull retries)"] == pytest.approx(500)
    assert parts["round trip (ServerApp push to pull)"] == pytest.approx(3500)
    assert sum(v for k, v in parts.items() if not k.startswith("round trip")) == pytest.approx(3500)


def test_a_server_already_waiting_holds_no_reply(tmp_path: Path) -> None:
    server, node = _one_message(tmp_path, server_waits_at=100.1)
    parts = latency.parts_of(latency.journeys(server, [node])[0])
    assert parts["reply held in the SuperLink while the ServerApp is busy (the other client)"] == 0
    assert parts["SuperLink to ServerApp pull (transfer, poll, object-pull retries)"] == pytest.approx(1100)


def test_mean_parts_add_up_to_the_mean_round_trip_where_medians_need_not(tmp_path: Path) -> None:
    # Prepare: two messages, one reply held 0.6 s for the busy server, one taken at once
    held, at_once = _one_message(tmp_path / "a", server_waits_at=103.0), _one_message(tmp_path / "b", server_waits_at=100.1)
    first, second = (latency.parts_of(latency.journeys(server, [node])[0]) for server, node in (held, at_once))
    # Execute
    means = latency.breakdown([first, second], statistics.mean)
    # Assert
    assert means["reply held in the SuperLink while the ServerApp is busy (the other client)"] == pytest.approx(300)
    assert sum(v for k, v in means.items() if not k.startswith("round trip")) == pytest.approx(means["round trip (ServerApp push to pull)"])
