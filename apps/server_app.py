"""Flower ServerApp: the round loop, the per-batch exchange with clients, and evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from logging import ERROR, INFO, WARNING

import flwr
import torch
import torch.nn.functional as F
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from flsplit.config import RunConfig, parse_run_config
from flsplit.ledger import Ledger
from flsplit.results import ResultsWriter
from flsplit.split import activation_shape, build_halves, sgd
from flsplit.wire import Packet, PayloadError, as_float32_weights, weight_specs
from strategies import ServerHalf, get_strategy, strategy_names
from strategies.base import batch_sizes
from apps.exchange import Exchange

app = ServerApp()


@dataclass
class Client:
    """A connected node, in the fixed order the server serves clients."""

    node_id: int
    index: int
    partition_id: int
    num_examples: int
    batches_per_round: int


@dataclass
class RoundStats:
    """What one round measured, summed over clients."""

    client_fwd_s: float = 0.0
    client_bwd_s: float = 0.0
    comm_s: float = 0.0
    round_trip_s: float = 0.0
    messages: int = 0
    aux_loss_sum: float = 0.0
    samples: int = 0
    failed: dict[int, str] = field(default_factory=dict)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train for ``num-server-rounds`` rounds and write ``config.json`` and ``metrics.jsonl``."""
    config = parse_run_config(context.run_config, strategies=strategy_names())
    strategy = get_strategy(config.strategy)
    ledger = Ledger()
    node_ids = _wait_for_nodes(grid, config)
    exchange = Exchange(grid, ledger, {n: i for i, n in enumerate(node_ids)})
    clients = _hello(exchange, node_ids)
    bottom, top, aux = build_halves(config)
    server = strategy.server(top, sgd(list(top.parameters()), config), config)
    slice_modules = {"bottom": bottom} | ({"aux": aux} if strategy.uses_aux_head else {})

    run_name = config.run_name or f"{config.strategy}-{config.model}-cut{config.cut}-n{len(clients)}-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    writer = ResultsWriter(config.results_dir, run_name)
    writer.write_config(
        config.as_run_config()
        | {"num_clients": len(clients), "cut_blocks": config.cut_blocks, "flwr_version": flwr.__version__, "torch_version": torch.__version__}
    )
    log(INFO, "flsplit: %s on %d clients, %d rounds; results in %s", config.strategy, len(clients), config.num_server_rounds, writer.dir)

    for round_number in range(1, config.num_server_rounds + 1):
        started = time.perf_counter()
        stats = _train_round(exchange, server, clients, config, round_number)
        train_s = time.perf_counter() - started
        weights = _aggregate(exchange, clients, slice_modules, round_number, stats) if config.aggregate_clients else None
        eval_started = time.perf_counter()
        evaluation = _evaluate(exchange, server, clients, config, weights, stats)
        server_times = server.watch.take()
        metrics = {
            "round": round_number,
            "strategy": config.strategy,
            "num_clients": len(clients),
            **evaluation,
            **server.take_metrics(),
            "aux_train_loss": stats.aux_loss_sum / stats.samples if strategy.uses_aux_head and stats.samples else None,
            **ledger.round_summary(),
            "client_fwd_s": stats.client_fwd_s,
            "client_bwd_s": stats.client_bwd_s,
            "server_s": server_times.get("server", 0.0),
            "comm_s": stats.comm_s,
            "train_messages": stats.messages,
            "round_trip_s": stats.round_trip_s,
            "round_s": train_s,
            "eval_s": time.perf_counter() - eval_started,
            "failed_clients": sorted(clients[i].partition_id for i in stats.failed),
            "messages_total": ledger.messages,
        }
        writer.append(metrics)
        log(
            INFO,
            "round %d/%d: test_acc=%.4f test_loss=%.4f train_loss=%.4f up=%.1fMB down=%.1fMB train %.1fs eval %.1fs",
            round_number, config.num_server_rounds, metrics["test_accuracy"], metrics["test_loss"],
            metrics["train_loss"], metrics["bytes_up"] / 1e6, metrics["bytes_down"] / 1e6, train_s, metrics["eval_s"],
        )
    log(INFO, "flsplit: done; metrics in %s", writer.metrics_path)


def _wait_for_nodes(grid: Grid, config: RunConfig, timeout_s: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= config.min_clients:
            return node_ids
        if time.monotonic() > deadline:
            raise RuntimeError(f"min-clients: only {len(node_ids)} of {config.min_clients} nodes connected in {timeout_s:.0f} s")
        time.sleep(1.0)


def _hello(exchange: Exchange, node_ids: list[int]) -> list[Client]:
    """Ask every node for its partition, and order clients by partition id (deterministic)."""
    for node_id in node_ids:
        exchange.send(node_id, "query.hello", Packet())
    found = []
    for node_id in node_ids:
        reply = exchange.receive(node_id, [])
        if reply.packet is None:
            raise RuntimeError(f"node {node_id} failed at start-up: {reply.error}")
        info = reply.packet.info
        found.append((int(info["partition_id"]), node_id, int(info["num_examples"]), int(info["batches_per_round"])))
    found.sort()
    clients = [Client(node_id, i, pid, n, b) for i, (pid, node_id, n, b) in enumerate(found)]
    exchange.client_index = {c.node_id: c.index for c in clients}
    return clients


def _train_round(exchange: Exchange, server: ServerHalf, clients: list[Client], config: RunConfig, round_number: int) -> RoundStats:
    """Serve every client's uploads in a fixed round-robin order until all are done."""
    stats = RoundStats()
    specs = server.upload_specs(activation_shape(config))
    pipelined = not server.replies_to_uploads
    active = list(clients)

    def request(packet: Packet | None = None) -> Packet:
        packet = packet or server.request()
        packet.info["round"] = round_number
        return packet

    for client in active:
        exchange.send(client.node_id, "train.step", request())
    while active:
        for client in list(active):
            reply = exchange.receive(client.node_id, specs)
            upload = reply.packet
            try:
                if upload is None:
                    raise PayloadError(reply.error or "no reply")
                if upload.tensors:
                    batch_sizes(upload, len(upload.tensors["labels"]["y"]), config.batch_size)
            except PayloadError as err:
                _drop(exchange, client, stats, str(err), active)
                continue
            done = bool(upload.info.get("done"))
            stats.client_fwd_s += float(upload.info.get("fwd_s", 0.0))
            stats.client_bwd_s += float(upload.info.get("bwd_s", 0.0))
            stats.comm_s += max(0.0, reply.round_trip_s - float(upload.info.get("handler_s", 0.0)))
            stats.round_trip_s += reply.round_trip_s
            stats.messages += 1
            stats.aux_loss_sum += float(upload.info.get("aux_loss_sum", 0.0))
            stats.samples += len(upload.tensors["labels"]["y"]) if upload.tensors else 0
            if pipelined and not done:
                exchange.send(client.node_id, "train.step", request())
            reply_packet = server.on_upload(client.index, upload) if upload.tensors else None
            if not pipelined and not done:
                exchange.send(client.node_id, "train.step", request(reply_packet))
            if done:
                active.remove(client)
    return stats


def _drop(exchange: Exchange, client: Client, stats: RoundStats, reason: str, active: list[Client]) -> None:
    log(ERROR, "client %d (node %d) dropped for the rest of the round: %s", client.partition_id, client.node_id, reason)
    exchange.abandon(client.node_id)
    stats.failed[client.index] = reason
    active.remove(client)


def _aggregate(exchange: Exchange, clients: list[Client], modules: dict, round_number: int, stats: RoundStats) -> dict[str, torch.Tensor] | None:
    """FedAvg of the client slices (and heads) with Flower's own strategy."""
    live = [c for c in clients if c.index not in stats.failed]
    for client in live:
        exchange.send(client.node_id, "train.sync", Packet(info={"round": round_number}))
    replies = []
    specs = weight_specs(modules)
    for client in live:
        reply = exchange.receive(client.node_id, specs, same_batch=False)
        if reply.packet is None:
            stats.failed[client.index] = reply.error or "no reply"
            log(ERROR, "client %d: slice not aggregated: %s", client.partition_id, reply.error)
            continue
        replies.append(reply.message)
    if not replies:
        log(WARNING, "round %d: no client slice to aggregate", round_number)
        return None
    arrays, _ = FedAvg().aggregate_train(round_number, replies)
    if arrays is None:
        return None
    return {k: torch.from_numpy(v.numpy().copy()) for k, v in as_float32_weights(arrays).items()}


def _evaluate(exchange: Exchange, server: ServerHalf, clients: list[Client], config: RunConfig, weights: dict[str, torch.Tensor] | None, stats: RoundStats) -> dict[str, float | None]:
    """Each client's slice embeds the test split; the top slice scores it.

    With aggregated slices every client holds the same weights, so one client evaluates and
    the others only load the new weights.
    """
    specs = server.upload_specs(activation_shape(config))
    evaluators = clients[:1] if weights is not None else [c for c in clients if c.index not in stats.failed]
    for client in clients:
        if weights is None and client not in evaluators:
            continue
        packet = Packet({"weights": weights} if weights is not None else {}, {"offset": 0, "evaluate": client in evaluators})
        exchange.send(client.node_id, "evaluate", packet, phase="eval")
    results = []
    server.top.eval()
    for client in clients:
        if weights is None and client not in evaluators:
            continue
        correct = samples = aux_correct = 0
        loss_sum = aux_loss_sum = 0.0
        while True:
            reply = exchange.receive(client.node_id, specs)
            if reply.packet is None:
                log(ERROR, "client %d: evaluation failed: %s", client.partition_id, reply.error)
                stats.failed.setdefault(client.index, reply.error or "evaluation failed")
                break
            info = reply.packet.info
            if client not in evaluators:
                break
            if not info["done"]:
                exchange.send(client.node_id, "evaluate", Packet(info={"offset": int(info["next_offset"]), "evaluate": True}), phase="eval")
            z = reply.packet.tensors["activations"]["z"]
            y = reply.packet.tensors["labels"]["y"]
            with torch.no_grad(), server.watch.time("eval"):
                logits = server.top(z)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
            samples += len(y)
            aux_correct += int(info.get("aux_correct", 0))
            aux_loss_sum += float(info.get("aux_loss_sum", 0.0))
            if info["done"]:
                results.append((correct / samples, loss_sum / samples, aux_correct / samples))
                break
    server.top.train()
    if not results:
        return {"test_accuracy": float("nan"), "test_loss": float("nan"), "aux_accuracy": None}
    uses_aux = get_strategy(config.strategy).uses_aux_head
    return {
        "test_accuracy": sum(r[0] for r in results) / len(results),
        "test_loss": sum(r[1] for r in results) / len(results),
        "aux_accuracy": sum(r[2] for r in results) / len(results) if uses_aux else None,
    }
