"""Asynchronous rounds (``asynchronous = true``, DSL): arrival order, closed on a quorum or a deadline.

A synchronous round serves clients in a fixed order and ends when the slowest client has trained
its epoch. Here every client gets its first request at once; the server trains on whichever
upload arrives next, sends that client its next request before training (DSL answers nothing, so
client and server compute overlap as before), and closes the round as soon as ``quorum`` clients
have finished their epoch (0: every live client) or ``round-deadline`` has passed, whichever
comes first. The definitions the mode rests on:

- **Staleness**, in batches: how many batches a client has trained this round beyond the
  slowest client still training, as their uploads report. With ``max-staleness = S`` a client
  more than ``S`` batches ahead gets its next request only once the gap has closed to ``S``
  (stale-synchronous parallel), so the gap the server trains on never exceeds ``S`` plus one
  upload's batches (``chunk-mb``); 0 bounds nothing. A finite bound makes fast clients wait for
  the slowest, so it trades the early close for a top slice that sees the clients in step.
- **Uploads after the close are dropped.** The close waits for each unfinished client's upload
  in flight (at most one: one message per node), drops it untrained, and tells the client its
  round is over (``CloseRound``), so nothing is ever in flight between rounds. Carrying them
  into the next round would train the top slice on activations of a slice that, with
  ``client-sync = "average"``, has been replaced since, and would put uploads into checkpoints.
  The client has still trained its bottom slice and head on those batches (they count in
  ``train_samples``); ``late_uploads``/``late_samples`` count what the server never saw.
- **Partial epochs**: a client stopped by the close continues from its next batch in the next
  round (its data order is not reset). With ``client-sync = "average"`` each slice is weighted
  by the samples it trained on in the round (``apps.client_app.sync``), not its partition size.
- **Resume**: a checkpoint is written after a round's close, when no upload is in flight, so a
  resumed run loses only the round that was running, as a synchronous one does; under the
  virtual clock, which restarts at 0 every round, it then repeats exactly.
- **Virtual clock** (``virtual-clock = true``): arrival order follows the declared slowdowns,
  not wall time. A client's request sent at virtual time ``t`` arrives as an upload of ``b``
  batches at ``t + slowdown × b``; the server takes the pending upload with the smallest virtual
  time (ties by partition id), takes no virtual time itself, and ``round-deadline`` is in these
  units (batches of a full-speed client). The server waits for every in-flight upload before it
  picks one, so wall time is the synchronous round's, and a seed fixes the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from flsplit.config import ConfigError, RunConfig
from flsplit.protocol import CloseRound, UploadTimings
from flsplit.wire import Packet, PayloadError

if TYPE_CHECKING:
    from apps.exchange import Reply
    from apps.rounds import Client, RoundDriver, RoundStats


class ClientLike(Protocol):
    """What the schedule reads of a client (``apps.rounds.Client`` has it)."""

    partition_id: int
    slowdown: float


@dataclass
class RoundSchedule:
    """An asynchronous round's bookkeeping, without any I/O: progress, staleness, holds, virtual times, the close.

    Clients are keyed by partition id. ``started[pid]`` is the virtual time at which the
    client's current request went out.
    """

    slowdowns: dict[int, float]
    quorum: int
    deadline: float
    max_staleness: int
    batches: dict[int, int] = field(default_factory=dict)
    started: dict[int, float] = field(default_factory=dict)
    unfinished: set[int] = field(default_factory=set)
    finished: list[int] = field(default_factory=list)
    held: set[int] = field(default_factory=set)
    staleness_max: int = 0

    @classmethod
    def of(cls, config: RunConfig, clients: Sequence[ClientLike]) -> RoundSchedule:
        """The schedule of a round over ``clients``; a ``quorum`` above their number is a ``ConfigError``."""
        if config.quorum > len(clients):
            raise ConfigError(f"invalid run config:\n  - quorum: {config.quorum} clients must finish, but the run has {len(clients)}; lower quorum (0: every client)")
        pids = [c.partition_id for c in clients]
        schedule = cls({c.partition_id: c.slowdown for c in clients}, config.quorum or len(clients), config.round_deadline, config.max_staleness)
        schedule.batches = dict.fromkeys(pids, 0)
        schedule.started = dict.fromkeys(pids, 0.0)
        schedule.unfinished = set(pids)
        return schedule

    def arrival(self, pid: int, round_batches: int) -> float:
        """The virtual time at which ``pid``'s upload reporting ``round_batches`` (so far this round) arrives."""
        return self.started[pid] + self.slowdowns[pid] * max(round_batches - self.batches[pid], 0)

    def lead(self, pid: int) -> int:
        """How many batches ``pid`` is ahead of the slowest client still training (its staleness gap)."""
        return self.batches[pid] - min(self.batches[u] for u in self.unfinished | {pid})

    def record(self, pid: int, round_batches: int, done: bool) -> None:
        """An upload of ``pid`` that the server trains on: its progress, its gap, whether it finished."""
        self.batches[pid] = max(self.batches[pid], round_batches)
        self.staleness_max = max(self.staleness_max, self.lead(pid))
        if done:
            self.unfinished.discard(pid)
            self.finished.append(pid)

    def drop(self, pid: int) -> None:
        """``pid`` failed: it no longer trains, holds anyone back, or counts towards the quorum."""
        self.unfinished.discard(pid)
        self.held.discard(pid)

    def may_continue(self, pid: int) -> bool:
        """Whether ``pid`` may have its next request now: within ``max-staleness`` of the slowest (0: always)."""
        return not self.max_staleness or self.lead(pid) <= self.max_staleness

    def sent(self, pid: int, at: float) -> None:
        """``pid``'s next request went out at virtual time ``at``."""
        self.held.discard(pid)
        self.started[pid] = at

    def hold(self, pid: int) -> None:
        """``pid`` is too far ahead: its next request waits until ``released`` names it."""
        self.held.add(pid)

    def released(self) -> list[int]:
        """The held clients that may continue now, in partition order."""
        return sorted(pid for pid in self.held if pid in self.unfinished and self.may_continue(pid))

    def closes(self, now: float) -> str | None:
        """Why the round closes at ``now`` (``quorum``, ``deadline``, ``all``), or ``None`` while it goes on."""
        if len(self.finished) >= self.quorum:
            return "quorum"
        if not self.unfinished:
            return "all"  # every client finished or failed, short of the quorum
        if self.deadline and now > self.deadline:
            return "deadline"
        return None


@dataclass
class Arrival:
    """An upload the server has received and not yet trained on, with its virtual arrival time."""

    client: Client
    reply: Reply
    at: float


class AsyncRound:
    """One asynchronous round of a ``RoundDriver``: requests, arrivals, training, the close.

    It runs the driver's own steps (``_request``, ``_receive_upload``, ``_accept``, ``_train_on``)
    in arrival order instead of the synchronous round-robin, so both paths validate, count and
    train alike.
    """

    #: How often the wall-clock loop polls the clients with a request out.
    POLL_S = 0.002

    def __init__(self, driver: RoundDriver, round_number: int, stats: RoundStats) -> None:
        self.driver, self.round_number, self.stats = driver, round_number, stats
        self.config = driver.config
        if driver.mixed and driver.strategy.aggregates(self.config):
            raise ConfigError(
                "invalid run config:\n  - asynchronous: with clients of several cuts, client-sync = \"average\" averages layer-wise "
                "by partition size, not by the samples a partial epoch trained; use client-sync = \"none\", or one cut for every node"
            )
        self.clients = {c.partition_id: c for c in driver.clients}
        self.schedule = RoundSchedule.of(self.config, driver.clients)
        self.out: list[int] = []  # partition ids with a request out and no reply received, in the order sent
        self.pending: dict[int, Arrival] = {}  # received, not yet trained on (virtual clock only)
        self.started_at = time.perf_counter()
        self.server_samples = 0

    def run(self) -> None:
        """Request from every client, train on arrivals until the round closes, then close it."""
        for pid in sorted(self.clients):
            self._request(pid, at=0.0)
        reason = None
        while reason is None:
            arrival = self._next_arrival()
            if arrival is None:
                reason = self.schedule.closes(float("inf"))  # the deadline passed while waiting
                break
            self._train_on(arrival)
            reason = self.schedule.closes(arrival.at if self.config.virtual_clock else self._elapsed())
        self._close(reason or "all")

    def _elapsed(self) -> float:
        """Wall-clock seconds since the round's first requests."""
        return time.perf_counter() - self.started_at

    def _request(self, pid: int, at: float, packet: Packet | None = None) -> None:
        self.driver._request(self.clients[pid], self.round_number, packet)
        self.schedule.sent(pid, at)
        self.out.append(pid)

    def _receive(self, pid: int) -> Reply:
        self.out.remove(pid)
        return self.driver._receive_upload(self.clients[pid])

    def _next_arrival(self) -> Arrival | None:
        """The next upload to train on, or ``None`` when the round closes first (or nothing is out)."""
        if self.config.virtual_clock:
            for pid in list(self.out):  # every upload in flight, so the choice is the virtual clock's alone
                reply = self._receive(pid)
                self.pending[pid] = Arrival(self.clients[pid], reply, self.schedule.arrival(pid, _round_batches(reply)))
            if not self.pending:
                return None
            first = min(self.pending.values(), key=lambda a: (a.at, a.client.partition_id))
            if self.schedule.closes(first.at) == "deadline":
                return None
            return self.pending.pop(first.client.partition_id)
        while self.out:
            if self.schedule.closes(self._elapsed()):
                return None
            for pid in list(self.out):  # in the order the requests went out: the longest waiting first
                if self.driver.exchange.replied(self.clients[pid].node_id):
                    return Arrival(self.clients[pid], self._receive(pid), 0.0)
            time.sleep(self.POLL_S)
        return None

    def _train_on(self, arrival: Arrival) -> None:
        """Validate and train on one upload; send its client's next request first, unless it is done or held."""
        pid = arrival.client.partition_id
        accepted = self.driver._accept(arrival.client, arrival.reply, self.stats)
        if accepted is None:
            self.schedule.drop(pid)
            self._release(arrival.at)
            return
        upload, report = accepted
        self.driver._report_progress(arrival.client, report, self.stats)
        done = bool(upload.info.get("done"))
        self.schedule.record(pid, report.round_batches or 0, done)
        if not done and self.schedule.may_continue(pid):
            self._request(pid, arrival.at)  # pipelined: DSL's next request does not depend on this upload
        elif not done:
            self.schedule.hold(pid)
        if upload.tensors:
            self.driver._train_on(arrival.client, upload, self.stats)
            self.server_samples += len(upload.labels)
        self._release(arrival.at)

    def _release(self, at: float) -> None:
        for pid in self.schedule.released():
            self._request(pid, at)

    def _close(self, reason: str) -> None:
        """End every unfinished client's round: its upload in flight is dropped, then ``CloseRound``."""
        waited_from = time.perf_counter()
        late_uploads = late_samples = 0
        for pid in sorted(self.schedule.unfinished):
            client = self.clients[pid]
            if pid not in self.schedule.held:
                arrival = self.pending.pop(pid, None)
                reply = arrival.reply if arrival is not None else self._receive(pid)
                accepted = self.driver._accept(client, reply, self.stats)  # the client trained on it; the server drops it
                if accepted is None:
                    continue
                upload, _ = accepted
                late_uploads += 1
                late_samples += len(upload.labels) if upload.tensors else 0
                if upload.info.get("done"):
                    continue
            self.driver._request(client, self.round_number, Packet(info=CloseRound(close_round=True).as_info()))
            self.driver._accept(client, self.driver._receive_upload(client), self.stats)
        self.stats.asynchrony = {
            "round_close": reason,
            "finished_clients": sorted(self.schedule.finished),
            "late_uploads": late_uploads,
            "late_samples": late_samples,
            "server_samples": self.server_samples,
            "staleness_max": self.schedule.staleness_max,
            "close_wait_s": time.perf_counter() - waited_from,
        }


def _round_batches(reply: Reply) -> int:
    """The batches an upload says its client has trained this round; 0 for a failed reply (it goes first, and fails)."""
    if reply.packet is None:
        return 0
    try:
        return UploadTimings.of(reply.packet.info).round_batches or 0
    except PayloadError:
        return 0
