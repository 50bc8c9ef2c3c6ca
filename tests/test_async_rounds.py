"""Asynchronous DSL rounds (``apps.async_rounds``): arrival order, the virtual clock, staleness and the close.

A scripted driver stands in for ``RoundDriver``: each client trains one batch per request and
replies at once, so the order the server trains in is the schedule's alone (no Flower, no torch
training).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from flsplit.aggregation import aggregate_replies
from flsplit.config import ConfigError
from flsplit.protocol import CloseRound, RoundTag, UploadTimings
from flsplit.wire import Packet
from tests.in_process_grid import run_server_app
from strategies import get_strategy, parse_config
from apps import rounds
from apps.async_rounds import AsyncRound, RoundSchedule
from apps.exchange import Reply
from apps.rounds import RoundStats, UploadReport


@dataclass
class ScriptedClient:
    """A client of ``quota`` batches, one per upload; ``closed`` once a ``CloseRound`` reached it."""

    partition_id: int
    slowdown: float
    quota: int
    node_id: int = 0
    trained: int = 0
    closed: bool = False
    reply: Packet | None = None

    def answer(self, request: Packet) -> None:
        if CloseRound.of(request.info).close_round:
            self.closed = True
            self.reply = _upload(self.trained, done=True, samples=0)
            return
        self.trained += 1
        self.reply = _upload(self.trained, done=self.trained >= self.quota, samples=1)


def _upload(round_batches: int, done: bool, samples: int) -> Packet:
    timings = UploadTimings(fwd_s=0.0, bwd_s=0.0, handler_s=0.0, peak_rss_mb=0.0, round_batches=round_batches).as_info()
    info = {"done": done, "batch_sizes": [samples] if samples else []} | timings
    if not samples:
        return Packet(info=info)
    return Packet.upload(torch.zeros(samples, 1, 1, 1), torch.zeros(samples, dtype=torch.long), info)


@dataclass
class ScriptedExchange:
    """``replied`` says whether a node's upload has arrived (the wall clock's order); ``arrived`` decides."""

    arrived: Callable[[int], bool] = lambda node_id: True

    def replied(self, node_id: int) -> bool:
        return self.arrived(node_id)


@dataclass
class ScriptedDriver:
    """The part of ``RoundDriver`` an ``AsyncRound`` calls; ``trained`` is the order the server trained on uploads."""

    config: object
    clients: list[ScriptedClient]
    exchange: ScriptedExchange = field(default_factory=ScriptedExchange)
    trained: list[int] = field(default_factory=list)
    mixed: bool = False  # clients of several cuts
    strategy: type = field(default_factory=lambda: get_strategy("dsl"))

    def _request(self, client: ScriptedClient, round_number: int, packet: Packet | None = None) -> None:
        packet = packet or Packet()
        packet.info |= RoundTag(round_number).as_info()
        client.answer(packet)

    def _receive_upload(self, client: ScriptedClient) -> Reply:
        packet, client.reply = client.reply, None
        assert packet is not None, f"client {client.partition_id}: received twice for one request"
        return Reply(client.node_id, None, packet, None, 0.0)

    def _accept(self, client: ScriptedClient, reply: Reply, stats: RoundStats) -> tuple[Packet, UploadReport]:
        assert reply.packet is not None
        return reply.packet, stats.note_upload(reply.packet, reply, client.partition_id)

    def _report_progress(self, client: ScriptedClient, report: UploadReport, stats: RoundStats) -> None:
        pass

    def _train_on(self, client: ScriptedClient, upload: Packet, stats: RoundStats) -> None:
        self.trained.append(client.partition_id)


def _round(slowdowns: list[float], quota: int = 4, **keys: object) -> tuple[ScriptedDriver, RoundStats]:
    config = parse_config({"strategy": "dsl", "asynchronous": True} | keys)
    clients = [ScriptedClient(pid, s, quota, node_id=100 + pid) for pid, s in enumerate(slowdowns)]
    driver, stats = ScriptedDriver(config, clients), RoundStats()
    AsyncRound(driver, 1, stats).run()  # type: ignore[arg-type]
    return driver, stats


def test_the_virtual_clock_serves_uploads_in_order_of_slowdown_times_batches_ties_by_partition() -> None:
    # Execute: three clients of 4 batches, the third twice as slow; every client must finish
    driver, stats = _round([1, 1, 2], **{"virtual-clock": True})
    # Assert: virtual arrivals 0,1 at 1,2,3,4 and 2 at 2,4,6,8, sorted by (time, partition)
    assert driver.trained == [0, 1, 0, 1, 2, 0, 1, 0, 1, 2, 2, 2]
    assert stats.asynchrony["round_close"] == "quorum" and stats.asynchrony["finished_clients"] == [0, 1, 2]
    assert stats.asynchrony["late_uploads"] == 0 and not any(c.closed for c in driver.clients)


def test_a_quorum_closes_the_round_without_the_straggler_and_drops_its_upload_in_flight() -> None:
    # Execute: 2 clients of 4 batches, the second 4x slow; the first one to finish closes the round
    driver, stats = _round([1, 4], quorum=1, **{"virtual-clock": True})
    # Assert: the straggler's first upload (virtual time 4) ties with the fast client's last and loses on partition id
    assert driver.trained == [0, 0, 0, 0]
    assert stats.asynchrony | {"close_wait_s": 0} == {
        "round_close": "quorum", "finished_clients": [0], "late_uploads": 1, "late_samples": 1,
        "server_samples": 4, "staleness_max": 4, "close_wait_s": 0,
    }
    straggler = driver.clients[1]
    assert straggler.closed and straggler.trained == 1  # it trained one batch, told to stop after it
    assert stats.samples == 5  # the clients trained on 4 + 1 batches; the server on 4


def test_a_deadline_in_virtual_units_closes_the_round_and_drops_what_arrives_after_it() -> None:
    # Execute: 8 batches each, the second client 4x slow, a deadline of 6 batches of a full-speed client
    driver, stats = _round([1, 4], quota=8, **{"virtual-clock": True, "round-deadline": 6.0})
    # Assert: uploads at virtual times <= 6 only: client 0's first six, client 1's first (at 4)
    assert driver.trained == [0, 0, 0, 0, 1, 0, 0]
    assert stats.asynchrony["round_close"] == "deadline" and stats.asynchrony["finished_clients"] == []
    assert stats.asynchrony["late_uploads"] == 2  # client 0's at 7 and client 1's at 8
    assert all(c.closed for c in driver.clients)


@pytest.mark.parametrize(("bound", "order", "gap"), [(0, [0, 0, 0, 0, 1, 1, 1, 1], 4), (2, [0, 0, 0, 1, 0, 1, 1, 1], 3)])
def test_max_staleness_holds_a_fast_client_back_until_the_slowest_catches_up(bound: int, order: list[int], gap: int) -> None:
    # Execute
    driver, stats = _round([1, 4], **{"virtual-clock": True, "max-staleness": bound})
    # Assert: with a bound of 2, client 0 waits after its third batch until client 1's first has arrived;
    # the gap never passes the bound plus one upload's batch
    assert driver.trained == order
    assert stats.asynchrony["staleness_max"] == gap
    assert not bound or gap <= bound + 1


def test_on_the_wall_clock_the_server_trains_on_whichever_upload_has_arrived() -> None:
    # Prepare: client 0's uploads arrive only once client 1 has finished (and its last upload was taken)
    config = parse_config({"strategy": "dsl", "asynchronous": True})
    clients = [ScriptedClient(0, 1, 2, node_id=100), ScriptedClient(1, 1, 2, node_id=101)]
    client_1_done = lambda: clients[1].trained >= 2 and clients[1].reply is None  # noqa: E731
    exchange = ScriptedExchange(lambda node_id: node_id == 101 or client_1_done())
    driver, stats = ScriptedDriver(config, clients, exchange), RoundStats()
    # Execute
    AsyncRound(driver, 1, stats).run()  # type: ignore[arg-type]
    # Assert: client 0 was asked first, but client 1's uploads came first and were trained on first
    assert driver.trained == [1, 1, 0, 0]
    assert stats.asynchrony["round_close"] == "quorum" and stats.asynchrony["finished_clients"] == [0, 1]


def test_the_schedule_counts_a_failed_client_out_of_the_quorum_and_releases_whom_it_held_back() -> None:
    # Prepare: client 0 is held back, 3 batches ahead of client 1, which then fails
    config = parse_config({"strategy": "dsl", "asynchronous": True, "max-staleness": 1, "quorum": 2})
    schedule = RoundSchedule.of(config, [ScriptedClient(0, 1, 4), ScriptedClient(1, 1, 4)])
    schedule.record(0, 3, done=False)
    schedule.hold(0)
    assert schedule.released() == []
    # Execute
    schedule.drop(1)
    # Assert
    assert schedule.released() == [0]
    assert schedule.closes(0.0) is None
    schedule.record(0, 4, done=True)
    assert schedule.closes(0.0) == "all"  # the quorum of 2 cannot be met, and no one is left training


def test_averaging_partial_epochs_of_several_cuts_is_refused_naming_the_key_and_the_fix() -> None:
    # Prepare: layer-wise averaging over mixed cuts weighs partitions, not the samples a partial epoch trained
    config = parse_config({"strategy": "dsl", "asynchronous": True, "client-sync": "average"})
    driver = ScriptedDriver(config, [ScriptedClient(0, 1, 1), ScriptedClient(1, 4, 1)], mixed=True)
    # Execute / Assert
    with pytest.raises(ConfigError, match='asynchronous: with clients of several cuts, client-sync = "average".*use client-sync = "none"'):
        AsyncRound(driver, 1, RoundStats())  # type: ignore[arg-type]


def test_a_quorum_larger_than_the_federation_is_refused_naming_the_key() -> None:
    config = parse_config({"strategy": "dsl", "asynchronous": True, "quorum": 3})
    with pytest.raises(ConfigError, match="quorum: 3 clients must finish, but the run has 2"):
        RoundSchedule.of(config, [ScriptedClient(0, 1, 1), ScriptedClient(1, 1, 1)])


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"strategy": "csl", "asynchronous": True}, "asynchronous: strategy 'csl' cannot be served asynchronously"),
        ({"strategy": "fsl-sage", "asynchronous": True}, "asynchronous: strategy 'fsl-sage'"),
        ({"strategy": "dsl-u", "asynchronous": True}, "asynchronous: strategy 'dsl-u'"),
        ({"strategy": "dsl", "quorum": 1, "virtual-clock": True}, "quorum, virtual-clock: shape an asynchronous round only; set asynchronous = true"),
        ({"strategy": "dsl", "asynchronous": True, "serve-order": "sequential"}, 'serve-order is "sequential"'),
        ({"strategy": "dsl", "asynchronous": True, "client-sync": "relay"}, 'client-sync = "relay"'),
    ],
)
def test_combinations_that_do_not_fit_an_asynchronous_round_are_refused(keys: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(keys)


def test_dsl_with_averaged_slices_may_run_asynchronously() -> None:
    config = parse_config({"strategy": "dsl", "asynchronous": True, "client-sync": "average", "transport": "stream"})
    assert config.asynchronous and config.client_sync == "average"


#: Two in-process ClientApps on synthetic data, the second one 4x slow; one batch per upload.
IN_PROCESS = {
    "dataset": "synthetic", "model": "resnet20", "max-batches": 3, "batch-size": 16, "eval-samples": 32, "chunk-mb": 0.5,
    "strategy": "dsl", "client-sync": "average", "slowdowns": "1,4", "asynchronous": True, "virtual-clock": True, "quorum": 1,
}


def _learning(run: list[dict]) -> list[dict]:
    """What training computed: everything but clocks and memory."""
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_mb"))} for r in run]


@pytest.mark.slow  # the real ServerApp and ClientApps in process, three short runs
@pytest.mark.usefixtures("task_identity")
def test_a_resumed_asynchronous_run_under_the_virtual_clock_repeats_an_uninterrupted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: record each round's averaging weights (the sync replies' num-examples)
    weights: list[list[int]] = []

    def recording(aggregator: object, round_number: int, replies: list) -> object:
        weights.append([int(r.content["metrics"]["num-examples"]) for r in replies])
        return aggregate_replies(aggregator, round_number, replies)

    monkeypatch.setattr(rounds, "aggregate_replies", recording)
    whole = run_server_app(IN_PROCESS | {"num-server-rounds": 2, "run-name": "whole"}, tmp_path)
    run_server_app(IN_PROCESS | {"num-server-rounds": 1, "run-name": "cut"}, tmp_path)
    # Execute
    resumed = run_server_app(IN_PROCESS | {"num-server-rounds": 2, "run-name": "cut", "resume": True}, tmp_path)
    # Assert: the same rounds; each closed when the fast client finished (virtual time 3), so the
    # straggler's first upload (due at 4) was dropped and the server trained on the fast client's 3 batches
    assert _learning(resumed) == _learning(whole)
    for r in whole:
        assert (r["round_close"], r["finished_clients"], r["late_uploads"], r["server_samples"]) == ("quorum", [0], 1, 3 * 16)
        assert r["client_slowdown_s"] > 0  # the straggler slept, and says so apart from its compute
    # partial epochs weigh what they trained: 3 batches of the fast client, 1 of the straggler
    assert weights == [[48, 16]] * 4
    facts = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert facts["client_slowdowns"] == [1.0, 4.0] and facts["slowdown_simulation"].startswith("sleep")


@pytest.mark.slow  # the real ServerApp and ClientApps in process, two one-round runs
@pytest.mark.usefixtures("task_identity")
def test_on_the_wall_clock_over_messages_a_round_runs_to_its_quorum_or_closes_on_its_deadline(tmp_path: Path) -> None:
    # Prepare: the wall clock, messages transport; in process a ClientApp trains while its request is pushed
    wall = {k: v for k, v in IN_PROCESS.items() if k not in ("virtual-clock", "quorum")} | {"num-server-rounds": 1, "max-batches": 2}
    # Execute
    [full] = run_server_app(wall | {"run-name": "full"}, tmp_path)
    [cut] = run_server_app(wall | {"run-name": "cut", "round-deadline": 0.001}, tmp_path)
    # Assert: without a quorum every client finishes, and the server trains on every upload
    assert (full["round_close"], full["finished_clients"], full["late_uploads"]) == ("quorum", [0, 1], 0)
    assert full["server_samples"] == full["train_samples"] == 2 * 2 * 16
    # a deadline that has passed before the first upload is read: both first uploads are dropped, then the round ends
    assert (cut["round_close"], cut["finished_clients"], cut["late_uploads"], cut["server_samples"]) == ("deadline", [], 2, 0)
    assert cut["train_samples"] == 2 * 16 and cut["failed_clients"] == []
