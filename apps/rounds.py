"""The phases of a round, as messages: hello, training exchange, aggregation, evaluation.

Clients are always served in partition order (one upload of each in turn, or one client's
whole round after another with ``serve-order = "sequential"``), whatever order their replies
arrive in, so a run's results depend on its seed and not on timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from logging import ERROR, WARNING

import torch
import torch.nn.functional as F
from flwr.common.logger import log
from flwr.serverapp.strategy import Strategy
from torch import nn

from flsplit.aggregation import aggregate_replies
from flsplit.config import RunConfig
from flsplit.memory import MemoryReading, measure, tensor_bytes
from flsplit.optim import set_round_lr
from flsplit.split import activation_shape
from flsplit.wire import Packet, PayloadError, weight_specs
from strategies import ServerHalf
from apps.exchange import Exchange

MB = 1 << 20


@dataclass
class Client:
    """A connected node, in the fixed order the server serves clients."""

    node_id: int
    index: int
    partition_id: int
    num_examples: int


@dataclass
class RoundStats:
    """What one round measured, summed over clients, and who failed in it and why."""

    client_fwd_s: float = 0.0
    client_bwd_s: float = 0.0
    comm_s: float = 0.0
    round_trip_s: float = 0.0
    messages: int = 0
    aux_loss_sum: float = 0.0
    samples: int = 0  # samples the clients trained on (the denominator of aux_loss_sum)
    peak_rss_mb: float = 0.0  # highest resident set of any client process (whole process)
    client_memory: MemoryReading | None = None  # highest probed peak of any client (flsplit.memory)
    server_memory: MemoryReading | None = None
    failures: dict[int, str] = field(default_factory=dict)  # partition id -> reason

    def note_memory(self, party: str, reading: MemoryReading) -> None:
        """Keep the highest peak measured for ``party`` (``client`` or ``server``) this round."""
        attribute = f"{party}_memory"
        current = getattr(self, attribute)
        if current is None or reading.peak > current.peak:
            setattr(self, attribute, reading)

    def memory_metrics(self) -> dict[str, float | None]:
        """Probed peaks and autograd's saved bytes in MiB (``None`` in rounds without a probe)."""
        out: dict[str, float | None] = {}
        for party in ("client", "server"):
            reading = getattr(self, f"{party}_memory")
            out[f"{party}_peak_mb"] = reading.peak / MB if reading else None
            out[f"{party}_saved_mb"] = reading.saved / MB if reading else None
        return out

    def fail(self, client: Client, reason: str, phase: str) -> None:
        """Record a client's failure in this round and log it with the client's name."""
        log(ERROR, "client %d (node %d) failed in %s: %s", client.partition_id, client.node_id, phase, reason)
        self.failures.setdefault(client.partition_id, f"{phase}: {reason}")


def hello(exchange: Exchange, node_ids: list[int], info: dict) -> list[Client]:
    """Greet every node (passing ``info``, e.g. a checkpoint to restore); order by partition."""
    for node_id in node_ids:
        exchange.send(node_id, "query.hello", Packet(info=dict(info)), phase="setup")
    found = []
    for node_id in node_ids:
        reply = exchange.receive(node_id, [])
        if reply.packet is None:
            raise RuntimeError(f"node {node_id} failed at start-up: {reply.error}")
        found.append((int(reply.packet.info["partition_id"]), node_id, int(reply.packet.info["num_examples"])))
    found.sort()
    partitions = [pid for pid, _, _ in found]
    if len(set(partitions)) != len(partitions):
        raise RuntimeError(f"node-config: two nodes share a partition-id ({partitions}); give each its own")
    clients = [Client(node_id, i, pid, n) for i, (pid, node_id, n) in enumerate(found)]
    exchange.client_index = {c.node_id: c.index for c in clients}
    return clients


def train_round(
    exchange: Exchange,
    server: ServerHalf,
    clients: list[Client],
    config: RunConfig,
    round_number: int,
    probes: dict[int, int] | None = None,
    sequential: bool = False,
) -> RoundStats:
    """Serve every client's uploads until all are done (or dropped).

    Interleaved, clients take turns one upload at a time; ``sequential`` serves one client's
    whole round before the next one starts. ``probes`` counts, per partition, the uploads
    already measured for the server's peak memory across rounds; the first ``memory-probe``
    of each client's are.
    """
    probes = {} if probes is None else probes
    stats = RoundStats()
    for optimizer in server.scheduled_optimizers():
        set_round_lr(optimizer, config, round_number)
    server.begin_round(round_number)
    for group in ([c] for c in clients) if sequential else [list(clients)]:
        _serve_clients(exchange, server, group, config, round_number, probes, stats)
    return stats


def _serve_clients(
    exchange: Exchange,
    server: ServerHalf,
    active: list[Client],
    config: RunConfig,
    round_number: int,
    probes: dict[int, int],
    stats: RoundStats,
) -> None:
    """Serve ``active`` round-robin, one upload of each in turn, until all are done or dropped."""
    specs = server.upload_specs(activation_shape(config))

    def request(client: Client, packet: Packet | None = None) -> Packet:
        packet = packet or server.request(client.index)
        packet.info["round"] = round_number
        return packet

    for client in active:
        exchange.send(client.node_id, "train.step", request(client))
    while active:
        for client in list(active):
            reply = exchange.receive(client.node_id, specs)
            upload = reply.packet
            try:
                if upload is None:
                    raise PayloadError(reply.error or "no reply")
                server.check_upload(upload)
            except PayloadError as err:
                stats.fail(client, str(err), "training")
                exchange.abandon(client.node_id)
                active.remove(client)
                continue
            done = bool(upload.info.get("done"))
            stats.client_fwd_s += float(upload.info.get("fwd_s", 0.0))
            stats.client_bwd_s += float(upload.info.get("bwd_s", 0.0))
            # The round trip minus what covered it: the client's handler and, running at the same
            # time, the server's own training on other uploads.
            covered = max(float(upload.info.get("handler_s", 0.0)), reply.server_busy_s)
            stats.comm_s += max(0.0, reply.round_trip_s - covered)
            stats.round_trip_s += reply.round_trip_s
            stats.messages += 1
            stats.aux_loss_sum += float(upload.info.get("aux_loss_sum", 0.0))
            uploaded = len(upload.tensors["labels"]["y"]) if upload.tensors else 0
            stats.samples += int(upload.info.get("local_samples", uploaded))
            stats.peak_rss_mb = max(stats.peak_rss_mb, float(upload.info.get("peak_rss_mb", 0.0)))
            # Pipelined: the next request does not depend on this upload, so it goes out before
            # the server trains on it and client and server compute overlap.
            pipelined = not server.awaits_reply(client.index)
            if pipelined and not done:
                exchange.send(client.node_id, "train.step", request(client))
            if "memory_peak_bytes" in upload.info:
                stats.note_memory("client", MemoryReading(int(upload.info["memory_peak_bytes"]), int(upload.info["memory_saved_bytes"])))
            reply_packet = _serve(server, client, upload, probes, stats) if upload.tensors else None
            if not pipelined and not done:
                exchange.send(client.node_id, "train.step", request(client, reply_packet))
            if done:
                active.remove(client)


def _serve(server: ServerHalf, client: Client, upload: Packet, probes: dict[int, int], stats: RoundStats) -> Packet | None:
    """``server.on_upload``, measuring the server's peak memory on the first uploads."""
    if probes.get(client.partition_id, 0) >= server.config.memory_probe:
        return server.on_upload(client.index, upload)
    probes[client.partition_id] = probes.get(client.partition_id, 0) + 1
    received = tensor_bytes(t for group in upload.tensors.values() for t in group.values())
    modules, optimizers = server.trained_state()
    with measure(modules, optimizers, held=received) as reading:
        reply = server.on_upload(client.index, upload)
    stats.note_memory("server", reading)
    return reply


def aggregate(exchange: Exchange, clients: list[Client], modules: dict[str, nn.Module], round_number: int, stats: RoundStats, aggregator: Strategy) -> dict[str, torch.Tensor] | None:
    """Average the client ``modules`` with a Flower strategy's ``aggregate_train`` (FedAvg by default)."""
    live = [c for c in clients if c.partition_id not in stats.failures]
    for client in live:
        exchange.send(client.node_id, "train.sync", Packet(info={"round": round_number}))
    replies = []
    specs = weight_specs(modules)
    for client in live:
        reply = exchange.receive(client.node_id, specs, same_batch=False)
        if reply.packet is None:
            stats.fail(client, reply.error or "no reply", "aggregation")
            continue
        replies.append(reply.message)
    if not replies:
        log(WARNING, "round %d: no client slice to aggregate", round_number)
        return None
    return aggregate_replies(aggregator, round_number, replies)


def evaluate(exchange: Exchange, server: ServerHalf, clients: list[Client], config: RunConfig, weights: dict[str, torch.Tensor] | None, stats: RoundStats, checkpoint: dict) -> dict[str, float | None]:
    """Each client's slice embeds the test split; the top slice scores it.

    Every reachable client gets one evaluate message per round, which carries the aggregated
    weights (if any) and tells it where to checkpoint its slice. With aggregated slices every
    client holds the same weights, so only the first one runs the test split.
    """
    specs = server.upload_specs(activation_shape(config))
    reachable = [c for c in clients if c.partition_id not in stats.failures]
    evaluators = reachable[:1] if weights is not None else reachable
    for client in reachable:
        packet = Packet({"weights": weights} if weights is not None else {}, {"offset": 0, "evaluate": client in evaluators, **checkpoint})
        exchange.send(client.node_id, "evaluate", packet, phase="eval")
    results = []
    server.top.eval()
    for client in reachable:
        correct = samples = aux_correct = 0
        loss_sum = 0.0
        while True:
            reply = exchange.receive(client.node_id, specs)
            if reply.packet is None:
                stats.fail(client, reply.error or "no reply", "evaluation")
                break
            info = reply.packet.info
            if client not in evaluators:
                break
            if not info["done"]:
                exchange.send(client.node_id, "evaluate", Packet(info={"offset": int(info["next_offset"]), "evaluate": True}), phase="eval")
            z = reply.packet.tensors["activations"]["z"]
            y = reply.packet.tensors["labels"]["y"]
            with torch.no_grad():
                logits = server.top(z)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
            samples += len(y)
            aux_correct += int(info.get("aux_correct", 0))
            if info["done"]:
                results.append((correct / samples, loss_sum / samples, aux_correct / samples))
                break
    server.top.train()
    if not results:
        return {"test_accuracy": float("nan"), "test_loss": float("nan"), "aux_accuracy": None}
    return {
        "test_accuracy": sum(r[0] for r in results) / len(results),
        "test_loss": sum(r[1] for r in results) / len(results),
        "aux_accuracy": sum(r[2] for r in results) / len(results),
    }
