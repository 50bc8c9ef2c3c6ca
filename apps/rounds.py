"""The phases of a round, as messages: hello, training exchange, aggregation, evaluation.

Clients are served in the order ``SplitStrategy.serving_groups`` gives (one upload of each in
turn, or one client's whole round after another, in partition order or a seeded shuffle),
whatever order their replies arrive in, so a run's results depend on its seed and not on timing.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
from typing import Any

import torch
import torch.nn.functional as F
from flwr.common.logger import log
from flwr.serverapp.strategy import Strategy

from flsplit import trace
from flsplit.aggregation import aggregate_replies
from flsplit.config import RunConfig
from flsplit.coverage import covers_fewer_clients
from flsplit.memory import MemoryReading, measure, tensor_bytes
from flsplit.optim import set_round_lr
from flsplit.progress import ProgressMeter
from flsplit.protocol import (
    EvaluateChunk,
    EvaluateRequest,
    HeadRequest,
    HeadScore,
    HelloReply,
    HelloRequest,
    MessageKind,
    RoundTag,
    UploadTimings,
)
from flsplit.split import activation_shape
from flsplit.tracking import NoTracker, Tracker
from flsplit.wire import Packet, PayloadError, TensorSpec, weight_specs
from strategies import ServerHalf, SplitStrategy
from apps.async_rounds import AsyncRound
from apps.exchange import Exchange, Reply
from apps.mixed_cuts import average_layerwise
from apps.stream_exchange import StreamExchange

MiB = 1 << 20


@dataclass
class Client:
    """A connected node, in the fixed order the server serves clients."""

    node_id: int
    index: int
    partition_id: int
    num_examples: int
    nice: int  # the ClientApp process's niceness (Ray's workers: 15 unless told otherwise)
    threads: int  # its torch intra-op threads
    batches_per_round: int  # the batches it trains on per round (the progress lines' total)
    software: dict[str, str]  # its interpreter and versions (flsplit.software), as it reported them
    cut_blocks: int  # its cut (node config, or ``cuts``), checked at hello (apps.mixed_cuts)
    activation_shape: tuple[int, ...]  # what its slice outputs at that cut
    worker_resources: dict[str, float] = field(default_factory=dict)  # in simulation: what Ray reserved for it
    slowdown: float = 1.0  # a simulated slow device (flsplit.slowdown), as it reported it


@dataclass
class RoundStats:
    """What one round measured, summed over clients, and who failed in it and why."""

    client_fwd_s: float = 0.0
    client_bwd_s: float = 0.0
    client_slowdown_s: float = 0.0  # slept by simulated slow devices (flsplit.slowdown), not compute
    comm_s: float = 0.0
    round_trip_s: float = 0.0
    messages: int = 0
    aux_loss_sum: float = 0.0
    samples: int = 0  # samples the clients trained on (the denominator of aux_loss_sum)
    peak_rss_mb: float = 0.0  # highest resident set of any client process (whole process)
    client_memory: MemoryReading | None = None  # highest probed peak of any client (flsplit.memory)
    server_memory: MemoryReading | None = None
    client_cuda_peak: int | None = None  # highest torch.cuda.max_memory_allocated of a probe; None off CUDA
    server_cuda_peak: int | None = None
    failures: dict[int, str] = field(default_factory=dict)  # partition id -> reason
    client_metrics: dict[str, float] = field(default_factory=dict)  # a client half's own (Packet.add_metric), summed
    #: Per partition: its compute (forward and backward) and its busy time (every request's
    #: handling, from arrival to upload), in seconds, and its probed peak memory in MiB. With
    #: clients of different cuts or speeds these say who holds the round up.
    compute_s: dict[int, float] = field(default_factory=dict)
    busy_s: dict[int, float] = field(default_factory=dict)
    peak_mb: dict[int, float] = field(default_factory=dict)
    asynchrony: dict[str, Any] = field(default_factory=dict)  # an asynchronous round's close (apps.async_rounds)

    def note_upload(self, upload: Packet, reply: Reply, partition_id: int) -> UploadReport:
        """Add one training upload's report (the ClientApp's timing and memory, the strategy's loss)."""
        report = UploadReport.of(upload)
        self.compute_s[partition_id] = self.compute_s.get(partition_id, 0.0) + report.fwd_s + report.bwd_s
        self.busy_s[partition_id] = self.busy_s.get(partition_id, 0.0) + report.handler_s
        if report.memory is not None:
            self.peak_mb[partition_id] = max(self.peak_mb.get(partition_id, 0.0), report.memory.peak / MiB)
        self.client_fwd_s += report.fwd_s
        self.client_bwd_s += report.bwd_s
        self.client_slowdown_s += report.slowdown_s
        # The round trip minus what covered it: the client's handler and, running at the same
        # time, the server's own training on other uploads.
        self.comm_s += max(0.0, reply.round_trip_s - max(report.handler_s, reply.server_busy_s))
        self.round_trip_s += reply.round_trip_s
        trace.record("upload", round_trip_s=reply.round_trip_s, handler_s=report.handler_s, server_busy_s=reply.server_busy_s)
        self.messages += 1
        self.aux_loss_sum += report.aux_loss_sum
        self.samples += report.local_samples
        self.peak_rss_mb = max(self.peak_rss_mb, report.peak_rss_mb)
        for name, value in report.metrics.items():
            self.client_metrics[name] = self.client_metrics.get(name, 0.0) + value
        if report.memory is not None:
            self.note_memory("client", report.memory)
        return report

    def note_memory(self, party: str, reading: MemoryReading) -> None:
        """Keep the highest peak measured for ``party`` (``client`` or ``server``) this round."""
        attribute = f"{party}_memory"
        current = getattr(self, attribute)
        if current is None or reading.peak > current.peak:
            setattr(self, attribute, reading)
        if reading.cuda_peak is not None:
            highest = getattr(self, f"{party}_cuda_peak")
            setattr(self, f"{party}_cuda_peak", max(highest or 0, reading.cuda_peak))

    def fail(self, client: Client, reason: str, phase: str) -> None:
        """Record a client's failure in this round and log it with the client's name."""
        log(ERROR, "client %d (node %d) failed in %s: %s", client.partition_id, client.node_id, phase, reason)
        self.failures.setdefault(client.partition_id, f"{phase}: {reason}")

    def as_metrics(self) -> dict[str, Any]:
        """The round's client-side measurements and failures, as ``metrics.jsonl`` fields."""
        out: dict[str, Any] = {
            "aux_train_loss": self.aux_loss_sum / self.samples if self.samples else None,
            "client_fwd_s": self.client_fwd_s,
            "client_bwd_s": self.client_bwd_s,
            "client_slowdown_s": self.client_slowdown_s,
            "comm_s": self.comm_s,
            "train_messages": self.messages,
            "train_samples": self.samples,
            "round_trip_s": self.round_trip_s,
            "client_peak_rss_mb": self.peak_rss_mb,
        }
        for party in ("client", "server"):  # probed peaks and autograd's saved bytes, in MiB
            reading = getattr(self, f"{party}_memory")
            out[f"{party}_peak_mb"] = reading.peak / MiB if reading else None
            out[f"{party}_saved_mb"] = reading.saved / MiB if reading else None
            cuda = getattr(self, f"{party}_cuda_peak")
            out[f"{party}_cuda_peak_mb"] = cuda / MiB if cuda is not None else None
        out |= {f"client.{name}": value for name, value in sorted(self.client_metrics.items())}
        for name, values in (("per_client_compute_s", self.compute_s), ("per_client_busy_s", self.busy_s), ("per_client_peak_mb", self.peak_mb)):
            out[name] = {str(pid): value for pid, value in sorted(values.items())}  # by partition id
        out |= self.asynchrony
        out["failed_clients"] = sorted(self.failures)
        out["failures"] = [{"client": pid, "reason": why} for pid, why in sorted(self.failures.items())]
        return out


@dataclass(frozen=True)
class UploadReport:
    """The control fields of a training upload, read in one place.

    The ClientApp always sets the timing fields and ``round_batches`` (the client's own count,
    right for every strategy: DSL's uploads carry several batches, CSE-FSL's skip some); a
    strategy's client sets ``aux_loss_sum``
    and ``local_samples`` when it trains on more samples than it uploads (DSL's family).
    A required field that is missing is a protocol error, never a silent zero.
    """

    fwd_s: float
    bwd_s: float
    slowdown_s: float
    handler_s: float
    peak_rss_mb: float
    aux_loss_sum: float
    local_samples: int
    memory: MemoryReading | None
    metrics: dict[str, float]  # the strategy's own client metrics (Packet.add_metric)
    round_batches: int | None  # batches the client has trained on so far this round (None: not reported)

    @classmethod
    def of(cls, upload: Packet) -> UploadReport:
        timings = UploadTimings.of(upload.info)
        memory = None
        if timings.memory_peak_bytes is not None:
            memory = MemoryReading(timings.memory_peak_bytes, timings.memory_saved_bytes or 0, cuda_peak=timings.memory_cuda_peak_bytes)
        info = upload.info
        return cls(
            fwd_s=timings.fwd_s,
            bwd_s=timings.bwd_s,
            slowdown_s=timings.slowdown_s,
            handler_s=timings.handler_s,
            peak_rss_mb=timings.peak_rss_mb,
            aux_loss_sum=float(info.get("aux_loss_sum", 0.0)),  # type: ignore[arg-type]
            # (not ``info.get``'s default: that is evaluated first, and a U-shaped upload has no labels)
            local_samples=int(info["local_samples"]) if "local_samples" in info else len(upload.labels) if upload.has_data else 0,  # type: ignore[arg-type]
            memory=memory,
            metrics=upload.metrics,
            round_batches=timings.round_batches,
        )


def hello(exchange: Exchange, node_ids: list[int], greeting: HelloRequest, config: RunConfig) -> list[Client]:
    """Greet every node (telling it where checkpoints go, and any round to restore); order by partition.

    A node that reports no cut (an older flsplit) runs the run's ``cut``.
    """
    for node_id in node_ids:
        exchange.send(node_id, MessageKind.HELLO, Packet(info=greeting.as_info()))
    found = []
    for node_id in node_ids:
        reply = exchange.receive(node_id, [])
        if reply.packet is None:
            raise RuntimeError(f"node {node_id} failed at start-up: {reply.error}")
        node = HelloReply.of(reply.packet.info)
        cut = config.cut_blocks if node.cut_blocks is None else node.cut_blocks
        shape = tuple(int(n) for n in node.activation_shape.split(",")) if node.activation_shape else activation_shape(config)
        facts = (node.num_examples, node.nice, node.threads, node.batches_per_round, node.software(), cut, shape, node.worker_resources(), node.slowdown)
        found.append((node.partition_id, node_id, facts))
    found.sort(key=lambda row: row[:2])
    partitions = [pid for pid, *_ in found]
    if len(set(partitions)) != len(partitions):
        raise RuntimeError(f"node-config: two nodes share a partition-id ({partitions}); give each its own")
    clients = [Client(node_id, i, pid, *facts) for i, (pid, node_id, facts) in enumerate(found)]
    exchange.client_index = {c.node_id: c.index for c in clients}
    return clients


class RoundDriver:
    """Runs the rounds of one run: training exchange, aggregation, evaluation, metrics.

    It holds what every phase needs (the exchange, the server half, the clients, the config)
    so that the ServerApp's loop reads ``metrics = driver.run_round(r)``, as Flower's
    ``Strategy.start`` keeps its state on ``self``.
    """

    def __init__(
        self,
        exchange: Exchange | StreamExchange,
        server: ServerHalf,
        strategy: type[SplitStrategy],
        clients: list[Client],
        config: RunConfig,
        aggregator: Strategy,
        tracker: Tracker | None = None,
    ) -> None:
        self.exchange, self.server, self.strategy = exchange, server, strategy
        self.clients, self.config, self.aggregator = clients, config, aggregator
        self.tracker = tracker or NoTracker()  # also receives the progress points (tensorboard)
        self.meter: ProgressMeter | None = None  # this round's progress (flsplit.progress)
        self.round_batches: dict[int, int] = {}  # batches each partition has trained on this round
        self.synced_specs: dict[int, list[TensorSpec]] = {}  # by cut: what a client's synced slice must hold
        self.mixed = len({c.cut_blocks for c in clients}) > 1
        self.probes: dict[int, int] = {}  # uploads measured for the server's peak memory, per partition
        self.aggregated: dict[str, torch.Tensor] | None = None  # the last round's averaged slice
        self.holder: Client | None = None  # with client-sync = "relay": the client holding the slice
        server.partition_sizes = {c.index: c.num_examples for c in clients}
        server.entry_offsets = {c.index: c.cut_blocks - config.shallowest_cut_blocks for c in clients}
        if isinstance(exchange, StreamExchange):
            exchange.check_capacity(clients, 1 if strategy.serves_sequentially(config) else len(clients))

    def run_round(self, round_number: int) -> dict[str, Any]:
        """Train, aggregate (if the strategy does), evaluate; return the round's metrics."""
        started = time.perf_counter()
        stats = self.train(round_number)
        train_s = time.perf_counter() - started
        weights = self.aggregate(round_number, stats) if self.strategy.aggregates(self.config) else None
        # One averaged slice for all, for a strategy that uses it (FedAvg's top); none with mixed cuts.
        self.server.end_round(round_number, next(iter(weights.values())) if weights and not self.mixed else None)
        eval_started = time.perf_counter()
        evaluation = self.evaluate(round_number, weights, stats)
        metrics = {
            "round": round_number,
            "strategy": self.config.strategy,
            "num_clients": len(self.clients),
            **evaluation,
            **self.server.take_metrics(),
            **self.exchange.ledger.round_summary(),
            **stats.as_metrics(),
            "server_s": self.server.watch.take().get("server", 0.0),
            "round_s": train_s,
            "eval_s": time.perf_counter() - eval_started,
            "server_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if not self.strategy.uses_aux_head:
            metrics["aux_accuracy"] = metrics["aux_train_loss"] = None
        self.aggregated = weights
        return metrics

    def train(self, round_number: int) -> RoundStats:
        """Serve every client's uploads until all are done (or dropped).

        Interleaved, clients take turns one upload at a time; a strategy (or ``serve-order``)
        that serves sequentially finishes one client's round before the next one starts.
        """
        stats = RoundStats()
        for optimizer in self.server.scheduled_optimizers():
            set_round_lr(optimizer, self.config, round_number)
        self.server.begin_round(round_number)
        total = sum(c.batches_per_round for c in self.clients)
        self.meter = ProgressMeter(self.config.progress, round_number, total, time.perf_counter())
        self.round_batches = {}
        if self.config.asynchronous:  # arrival order, closed on a quorum or deadline (apps.async_rounds)
            AsyncRound(self, round_number, stats).run()
            return stats
        groups = self.strategy.serving_groups(self.config, round_number, len(self.clients))
        relays = self.strategy.relays(self.config)
        if relays and self.holder is None and round_number > 1:  # a resumed run: last round's last client
            last = self.strategy.serving_groups(self.config, round_number - 1, len(self.clients))[-1][0]
            self.holder = self.clients[last]
        for group in groups:
            active = [self.clients[i] for i in group]
            if relays:
                active = [c for c in active if self._hand_over(c, stats)]
            self._serve(list(active), round_number, stats)
            if relays and active and active[0].partition_id not in stats.failures:
                self.holder = active[0]
        return stats

    def _hand_over(self, client: Client, stats: RoundStats) -> bool:
        """Give ``client`` the relayed slice from the client that trained it last; False if it failed.

        The slice goes up from its holder and down to ``client``, counted as ``bytes_model_relay``.
        The first client of a run starts from the seeded initial slice, as every client does.
        """
        holder = self.holder
        if holder is None or holder is client:
            return True
        self.exchange.send(holder.node_id, MessageKind.RELAY_FETCH, Packet(info={}))
        reply = self.exchange.receive(holder.node_id, self.synced_specs_of(holder), same_batch=False)
        if reply.packet is None:
            stats.fail(holder, reply.error or "no reply", "relay")
            self.holder = None  # the slice is lost with its holder; the next client continues from its own
            return True
        self.exchange.send(client.node_id, MessageKind.RELAY, Packet({"weights": reply.packet.tensors["weights"]}))
        if self.exchange.receive(client.node_id, []).packet is None:
            stats.fail(client, "no reply to the relayed slice", "relay")
            return False
        return True

    def _serve(self, active: list[Client], round_number: int, stats: RoundStats) -> None:
        """Serve ``active`` round-robin, one upload of each in turn, until all are done or dropped."""
        for client in active:
            self._request(client, round_number)
        while active:
            for client in list(active):
                accepted = self._accept(client, self._receive_upload(client), stats)
                if accepted is None:
                    active.remove(client)
                    continue
                upload, report = accepted
                self._report_progress(client, report, stats)
                done = bool(upload.info.get("done"))
                # Pipelined: the next request does not depend on this upload, so it goes out
                # before the server trains on it and client and server compute overlap.
                pipelined = not self.server.awaits_reply(client.index)
                if pipelined and not done:
                    self._request(client, round_number)
                answer = self._train_on(client, upload, stats) if upload.tensors else None
                if not pipelined and not done:
                    self._request(client, round_number, answer)
                if done:
                    active.remove(client)

    def _receive_upload(self, client: Client) -> Reply:
        """Wait for ``client``'s next training upload."""
        return self.exchange.receive(client.node_id, self.server.upload_specs_of(client.index, client.activation_shape))

    def _accept(self, client: Client, reply: Reply, stats: RoundStats) -> tuple[Packet, UploadReport] | None:
        """A training upload, validated, noted in ``stats`` and on the server's device; ``None`` if it failed (recorded, client dropped)."""
        upload = reply.packet
        try:
            if upload is None:
                raise PayloadError(reply.error or "no reply")
            self.server.check_upload(upload)
            report = stats.note_upload(upload, reply, client.partition_id)
            upload = upload.to(self.server.placement.device)  # validated on the CPU, then moved once
        except PayloadError as err:
            stats.fail(client, str(err), "training")
            self.exchange.abandon(client.node_id)
            return None
        return upload, report

    def _report_progress(self, client: Client, report: UploadReport, stats: RoundStats) -> None:
        """Log (and track) the round's progress when the meter says this upload passed a tenth."""
        if report.round_batches is None or self.meter is None:
            return
        self.round_batches[client.partition_id] = report.round_batches
        point = self.meter.observe(sum(self.round_batches.values()), stats.samples, time.perf_counter())
        if point is not None:
            log(INFO, "%s", point.line())
            self.tracker.progress(point)

    def _request(self, client: Client, round_number: int, packet: Packet | None = None) -> None:
        packet = packet or self.server.request(client.index)
        packet.info |= RoundTag(round_number).as_info()
        self.exchange.send(client.node_id, MessageKind.STEP, packet)

    def _train_on(self, client: Client, upload: Packet, stats: RoundStats) -> Packet | None:
        """``server.on_upload``, measuring the server's peak memory on the first uploads."""
        if self.probes.get(client.partition_id, 0) >= self.config.memory_probe:
            return self.server.on_upload(client.index, upload)
        self.probes[client.partition_id] = self.probes.get(client.partition_id, 0) + 1
        received = tensor_bytes(t for group in upload.tensors.values() for t in group.values())
        modules, optimizers = self.server.trained_state()
        with measure(modules, optimizers, held=received) as reading:
            answer = self.server.on_upload(client.index, upload)
        stats.note_memory("server", reading)
        return answer

    def aggregate(self, round_number: int, stats: RoundStats) -> dict[int, dict[str, torch.Tensor]] | None:
        """Average the client slices with a Flower strategy's ``aggregate_train`` (FedAvg by default).

        Returns each client's averaged slice by client index: the same one for all, or, with
        mixed cuts, its own depth of a layer-wise average (``apps.mixed_cuts``).
        """
        live = [c for c in self.clients if c.partition_id not in stats.failures]
        for client in live:
            self.exchange.send(client.node_id, MessageKind.SYNC, Packet(info=RoundTag(round_number).as_info()))
        replies: dict[int, Reply] = {}
        for client in live:
            reply = self.exchange.receive(client.node_id, self.synced_specs_of(client), same_batch=False)
            if reply.packet is None:
                stats.fail(client, reply.error or "no reply", "aggregation")
                continue
            replies[client.index] = reply
        if not replies:
            log(WARNING, "round %d: no client slice to aggregate", round_number)
            return None
        if self.mixed:
            slices = {index: reply.packet.tensors["weights"] for index, reply in replies.items() if reply.packet is not None}
            return average_layerwise(self.aggregator, round_number, slices, self.clients, self.server, self.config.shallowest_cut_blocks)
        average = aggregate_replies(self.aggregator, round_number, [reply.message for reply in replies.values()])
        return None if average is None else {c.index: average for c in self.clients}

    def synced_specs_of(self, client: Client) -> list[TensorSpec]:
        """What ``client``'s synced modules (bottom slice, auxiliary head) must hold at its cut."""
        if client.cut_blocks not in self.synced_specs:
            modules = self.strategy.client_modules(self.config.with_cut(str(client.cut_blocks)))
            self.synced_specs[client.cut_blocks] = weight_specs(self.strategy.synced_modules(modules))
        return self.synced_specs[client.cut_blocks]

    def evaluate(self, round_number: int, weights: dict[int, dict[str, torch.Tensor]] | None, stats: RoundStats) -> dict[str, Any]:
        """Each client's slice embeds the test split; the top slice scores it.

        Every reachable client gets one evaluate message per round, which carries its
        aggregated weights (if any) and tells it to checkpoint its slice as of this round.
        With aggregated slices every client of a cut holds the same weights, so only the first
        one of each cut runs the test split (after a layer-wise average every path computes
        the same network; the heads differ by cut); in a round that ``eval-every`` skips, none
        does, and the test metrics are ``None``. ``evaluated_clients`` names the partitions
        whose slices the accuracy covers (the averaged slice covers every client that went
        into the average), so a round after a failure is not mistaken for one over the whole
        federation. With mixed cuts, ``test_accuracy_per_cut`` gives each cut's mean.
        """
        reachable = [c for c in self.clients if c.partition_id not in stats.failures]
        scores = self.config.scores_round(round_number)
        evaluators = (_first_of_each_cut(reachable) if weights is not None else reachable) if scores else []
        if self.strategy.relays(self.config) and scores:  # the relayed slice is the model: its holder scores it
            evaluators = [c for c in reachable if c is self.holder][:1]
        for client in reachable:
            info = EvaluateRequest(evaluate=client in evaluators, checkpoint_round=round_number).as_info()
            mine = weights.get(client.index) if weights is not None else None
            self.exchange.send(client.node_id, MessageKind.EVALUATE, Packet({"weights": mine} if mine is not None else {}, info))
        results: list[tuple[Client, tuple[float, float, float]]] = []
        self.server.top.eval()
        score = self._score_on_client if self.strategy.topology == "u-shaped" else self._score
        for client in reachable:
            scored = score(client, client in evaluators, stats)
            if scored is not None:
                results.append((client, scored))
        self.server.top.train()
        per_cut: dict[str, Any] = {"test_accuracy_per_cut": None} if self.mixed else {}
        if not scores:
            return {"test_accuracy": None, "test_loss": None, "aux_accuracy": None, "evaluated_clients": None, "test_accuracy_per_client": None} | per_cut
        if not results:
            nan = float("nan")
            return {"test_accuracy": nan, "test_loss": nan, "aux_accuracy": None, "evaluated_clients": [], "test_accuracy_per_client": []} | per_cut
        if self.mixed:
            cuts = sorted({c.cut_blocks for c, _ in results})
            per_cut["test_accuracy_per_cut"] = {str(cut): _mean([r[0] for c, r in results if c.cut_blocks == cut]) for cut in cuts}
        scored = [r for _, r in results]
        return {
            "test_accuracy": _mean([r[0] for r in scored]),
            "test_loss": _mean([r[1] for r in scored]),
            "aux_accuracy": _mean([r[2] for r in scored]),
            "evaluated_clients": [c.partition_id for c in reachable] if weights is not None else [c.partition_id for c, _ in results],
            # Un-synced slices are separate models: each one's accuracy, in partition order.
            "test_accuracy_per_client": [r[0] for r in scored],
        } | per_cut

    def _next_chunk(self, client: Client, evaluates: bool, stats: RoundStats) -> tuple[Reply, EvaluateChunk] | None:
        """The client's next evaluation reply and its chunk record; ``None`` if it failed (recorded) or does not score."""
        reply = self.exchange.receive(client.node_id, self.server.upload_specs(client.activation_shape))
        if reply.packet is None:
            stats.fail(client, reply.error or "no reply", "evaluation")
            return None
        if not evaluates:
            return None
        return reply, EvaluateChunk.of(reply.packet.info)

    def _score(self, client: Client, evaluates: bool, stats: RoundStats) -> tuple[float, float, float] | None:
        """Collect one client's test-split chunks; ``(accuracy, loss, aux accuracy)`` or ``None``."""
        correct = samples = aux_correct = 0
        loss_sum = 0.0
        while True:
            received = self._next_chunk(client, evaluates, stats)
            if received is None:
                return None
            reply, chunk = received
            if not chunk.done:
                request = Packet(info=EvaluateRequest(offset=chunk.next_offset).as_info())
                self.exchange.send(client.node_id, MessageKind.EVALUATE, request)
            scored = reply.packet.to(self.server.placement.device)
            y = scored.labels
            with torch.no_grad(), self.server.placement.autocast():
                logits = self.server.entry(client.index)(scored.activations)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
            samples += len(y)
            aux_correct += chunk.aux_correct
            if chunk.done:
                return correct / samples, loss_sum / samples, aux_correct / samples

    def _score_on_client(self, client: Client, evaluates: bool, stats: RoundStats) -> tuple[float, float, float] | None:
        """``_score`` for a U-shaped split: the client's head scores, so no test label comes up.

        Per chunk, the client's ``z1`` comes up, the middle's ``z2`` goes down, and the client
        answers with its head's correct count and loss sum over the chunk.
        """
        correct = samples = aux_correct = 0
        loss_sum, offset = 0.0, 0
        while True:
            received = self._next_chunk(client, evaluates, stats)
            if received is None:
                return None
            reply, chunk = received
            with torch.no_grad(), self.server.placement.autocast():
                z2 = self.server.top(reply.packet.to(self.server.placement.device).activations)
            self.exchange.send(client.node_id, MessageKind.EVALUATE, Packet({"activations": {"z": z2}}, HeadRequest(offset).as_info()))
            scored = self.exchange.receive(client.node_id, [])
            if scored.packet is None:
                stats.fail(client, scored.error or "no reply", "evaluation")
                return None
            head = HeadScore.of(scored.packet.info)
            correct, loss_sum, samples = correct + head.correct, loss_sum + head.loss_sum, samples + head.samples
            aux_correct += chunk.aux_correct
            if chunk.done:
                return correct / samples, loss_sum / samples, aux_correct / samples
            offset = chunk.next_offset
            self.exchange.send(client.node_id, MessageKind.EVALUATE, Packet(info=EvaluateRequest(offset=offset).as_info()))


def _first_of_each_cut(clients: list[Client]) -> list[Client]:
    """The first client of each cut, in partition order (one client when all share a cut)."""
    firsts: dict[int, Client] = {}
    for client in clients:
        firsts.setdefault(client.cut_blocks, client)
    return list(firsts.values())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def round_line(metrics: dict[str, Any], total_rounds: int) -> str:
    """The one log line per round: accuracy, losses, traffic and time."""
    failed = f" failed={metrics['failed_clients']}" if metrics["failed_clients"] else ""
    scored = "not scored (eval-every)" if metrics["test_accuracy"] is None else (
        f"test_acc={metrics['test_accuracy']:.4f} test_loss={metrics['test_loss']:.4f}"
    )
    if covers_fewer_clients(metrics):
        scored += f" (covers only clients {metrics['evaluated_clients']} of {metrics['num_clients']})"
    return (
        f"round {metrics['round']}/{total_rounds}: {scored} train_loss={metrics['train_loss']:.4f} "
        f"up={metrics['bytes_up'] / MiB:.1f}MiB down={metrics['bytes_down'] / MiB:.1f}MiB "
        f"train {metrics['round_s']:.1f}s eval {metrics['eval_s']:.1f}s{failed}"
    )
