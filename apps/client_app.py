"""Flower ClientApp: message handlers that delegate to the strategy's client half."""

from __future__ import annotations

import os
import resource
import time
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp

from flsplit import logstamp, trace
from flsplit.compression import part_dtypes
from flsplit.config import RunConfig
from flsplit.data import eval_indices, test_tensors
from flsplit.dataplane import Ticket
from flsplit.memory import MemoryReading, measure
from flsplit.optim import set_round_lr
from flsplit.privacy.defences import defend_upload
from flsplit.protocol import (
    CloseRound,
    Done,
    EvaluateChunk,
    EvaluateRequest,
    HeadRequest,
    HeadScore,
    HelloReply,
    HelloRequest,
    RoundTag,
    UploadTimings,
)
from flsplit.slowdown import pad_compute
from flsplit.software import software
from flsplit.split import activation_shape
from flsplit.wire import Packet, PayloadError, decode, encode, load_weights, weight_specs, weights_of
from strategies import ClientHalf, ClientSlice, get_strategy, parse_config
from apps import IMPORT_STARTED_AT, simulation_runtime
from apps.client_state import (
    RUN,
    as_node_runs_it,
    client_dataset,
    client_loader,
    client_placement,
    load_slice,
    node_slowdown,
    partition_of,
    restore_checkpoint,
    save_slice,
    write_checkpoint,
)
from apps.stream_round import serve_round

simulation_runtime.wake_pickup_on_push()  # must precede the runtime's extractor (see the module)
app = ClientApp()
logstamp.install()  # UTC time on flsplit's own log lines (flsplit/logstamp.py)
IMPORTED_AT = time.time()

MiB = 1 << 20
#: Test images embedded per forward pass while evaluating (bounds the evaluation's memory).
EVAL_BATCH = 256


@lru_cache(maxsize=4)
def _parse(items: tuple[tuple[str, object], ...]) -> RunConfig:
    return parse_config(dict(items), from_flower=True)


def run_config(context: Context) -> RunConfig:
    """The validated run config (parsed once per process), as this node runs it: with its own cut."""
    return as_node_runs_it(context, _parse(tuple(sorted(context.run_config.items()))))


def _quota(config: RunConfig, batches_per_epoch: int) -> int:
    quota = config.local_epochs * batches_per_epoch
    return min(quota, config.max_batches) if config.max_batches else quota


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Tell the server who this node is, how much data it holds, and what it runs on."""
    config = run_config(context)
    client_placement(config.device, config.amp, config.deterministic)  # a missing device fails here, at start-up
    partition_id, num_partitions = partition_of(context)
    request = HelloRequest.of(decode(msg.content, []).info)
    if request.clients_dir is not None:
        context.state[RUN] = ConfigRecord({"clients_dir": request.clients_dir})
    if request.restore_round is not None:
        restore_checkpoint(context, config, get_strategy(config.strategy), request.restore_round)
    loader = client_loader(context, config)
    reply = HelloReply(
        partition_id=partition_id,
        num_partitions=num_partitions,
        num_examples=len(loader),
        batches_per_round=_quota(config, loader.batches_per_epoch),
        cut_blocks=config.cut_blocks,
        activation_shape=",".join(map(str, activation_shape(config))),
        nice=os.getpriority(os.PRIO_PROCESS, 0),
        threads=torch.get_num_threads(),
        slowdown=node_slowdown(context, config),
        **simulation_runtime.worker_resources(),
        **software(),
    )
    return Message(encode(Packet(info=reply.as_info())), reply_to=msg)


@app.train("step")
def train_step(msg: Message, context: Context) -> Message:
    """One training exchange (``transport = "messages"``), or a whole round on the data plane (``"stream"``)."""
    started, entered_at = time.perf_counter(), time.time()
    config = run_config(context)
    strategy = get_strategy(config.strategy)
    half = strategy.client(config)
    client = load_slice(context, config, strategy)
    shape = activation_shape(config)
    specs = half.request_specs(client, shape)
    request = decode(msg.content, specs if msg.content.array_records else [], wire_dtype=config.wire_dtype).to(client.placement.device)  # validated on the CPU
    slowdown = node_slowdown(context, config)
    if "stream_token" in request.info:
        summary = serve_round(
            request, Ticket.from_info(request.info), context.node_id, config, lambda: half.request_specs(client, shape),
            lambda r, t: _train_once(half, r, client, config, t, slowdown), lambda r: r.to(client.placement.device),
        )
        save_slice(context, client, config.client_cache)
        return Message(encode(Packet(info=summary.as_info())), reply_to=msg)
    ready_at = time.time()
    upload = _train_once(half, request, client, config, started, slowdown)
    save_slice(context, client, config.client_cache)
    reply = Message(encode(upload, config.wire_dtype), reply_to=msg)
    if trace.enabled():
        trace.record(
            "clientapp", message_id=msg.metadata.message_id, process_started=trace.process_started_at(),
            import_started=IMPORT_STARTED_AT, imported=IMPORTED_AT, entered=entered_at, ready=ready_at,
        )
    return reply


def _train_once(half: ClientHalf, request: Packet, client: ClientSlice, config: RunConfig, started: float, slowdown: float = 1.0) -> Packet:
    """Apply one request and train to the next upload, timed from ``started`` (when the request arrived).

    A request that closes an asynchronous round ends the client's round where it stands (its
    epoch is partial; the next round continues from the next batch). A node with ``slowdown``
    above 1 then sleeps as a slower device would have computed (``flsplit.slowdown``).
    """
    round_number = RoundTag.of(request.info).round
    if round_number != client.counters["round"]:
        client.counters["round"] = round_number
        client.counters["round_start"] = client.counters["step"]
        client.counters["round_end"] = client.counters["step"] + _quota(config, client.loader.batches_per_epoch)
    if CloseRound.of(request.info).close_round:
        client.counters["round_end"] = client.counters["step"]
    set_round_lr(client.optimizer, config, round_number)
    upload, memory = _train_measured(half, request, client, config)
    defend_upload(upload, config, client.loader.partition_id, client.counters["step"])  # before anything sees it
    timings = client.watch.take()
    slept = pad_compute(slowdown, timings.get("fwd", 0.0) + timings.get("bwd", 0.0))
    upload.info |= UploadTimings(
        fwd_s=timings.get("fwd", 0.0),
        bwd_s=timings.get("bwd", 0.0),
        slowdown_s=slept,
        handler_s=time.perf_counter() - started,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        round_batches=client.counters["step"] - client.counters["round_start"],
        memory_peak_bytes=memory.peak if memory else None,
        memory_saved_bytes=memory.saved if memory else None,
        memory_cuda_peak_bytes=memory.cuda_peak if memory else None,
    ).as_info()
    return upload


def _train_measured(half: ClientHalf, request: Packet, client: ClientSlice, config: RunConfig) -> tuple[Packet, MemoryReading | None]:
    """``half.train``; the run's first ``memory-probe`` messages also measure peak memory."""
    if client.counters.get("probed", 0) >= config.memory_probe:
        client.live.pop("held_bytes", None)
        return half.train(request, client, int(config.chunk_mb * MiB)), None
    client.counters["probed"] = client.counters.get("probed", 0) + 1
    # A graph kept from the previous message (CSL) is memory this client holds, allocated
    # before this window opened; it is only in this process if the graph is.
    held = client.live.pop("held_bytes", 0)
    with measure(client.modules().values(), [client.optimizer], held) as reading:
        upload = half.train(request, client, int(config.chunk_mb * MiB))
    client.live["held_bytes"] = reading.held_after
    return upload, reading


@app.train("sync")
def sync(msg: Message, context: Context) -> Message:
    """Upload the modules the strategy averages, weighted by the number of examples.

    In an asynchronous round a client's epoch may be partial, so its weight is the samples it
    actually trained on this round (``apps.async_rounds``), not its partition's size.
    """
    config = run_config(context)
    strategy = get_strategy(config.strategy)
    client = load_slice(context, config, strategy)
    content = encode(Packet({"weights": weights_of(strategy.synced_modules(client.modules()))}))
    weight = client.loader.samples_in(client.counters.get("round_start", 0), client.counters["step"]) if config.asynchronous else len(client.loader)
    content["metrics"] = MetricRecord({"num-examples": weight})
    return Message(content, reply_to=msg)


@app.train("relay")
def relay(msg: Message, context: Context) -> Message:
    """Continue from the previous client's slice (``client-sync = "relay"``): load and keep it."""
    config = run_config(context)
    strategy = get_strategy(config.strategy)
    client = load_slice(context, config, strategy)
    synced = strategy.synced_modules(client.modules())
    load_weights(synced, decode(msg.content, weight_specs(synced), same_batch=False).tensors["weights"])
    save_slice(context, client, config.client_cache)
    return Message(encode(Packet(info=Done().as_info())), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Load aggregated weights if sent; then run a chunk of the test split through the slice."""
    config = run_config(context)
    strategy = get_strategy(config.strategy)
    client = load_slice(context, config, strategy)
    synced = strategy.synced_modules(client.modules())
    if "activations" in msg.content.array_records and strategy.topology == "u-shaped":  # z2 for the head, which scores here
        request = decode(msg.content, strategy.client(config).head_input_specs(), wire_dtype=config.wire_dtype)
        return Message(encode(_score_head(context, config, client, request)), reply_to=msg)
    specs = weight_specs(synced) if "weights" in msg.content.array_records else []
    packet = decode(msg.content, specs, same_batch=False)
    request = EvaluateRequest.of(packet.info)
    if "weights" in packet.tensors:
        load_weights(synced, packet.tensors["weights"])
        save_slice(context, client, config.client_cache)
    if request.checkpoint_round is not None:
        write_checkpoint(context, config, client, request.checkpoint_round)
    if not request.evaluate:
        return Message(encode(Packet(info=Done().as_info())), reply_to=msg)
    chunk = _evaluate_chunk(context, config, client, request.offset)
    return Message(encode(chunk, config.eval_wire), reply_to=msg)


def _chunk(context: Context, config: RunConfig, offset: int) -> tuple[np.ndarray, int]:
    """The test-split indices of the evaluation chunk at ``offset``, and the split's evaluated length."""
    order = eval_indices(client_dataset(context, config), config.eval_samples)
    c, h, w = activation_shape(config)
    per_message = max(1, int(config.chunk_mb * MiB) // (c * h * w * part_dtypes(config.eval_wire)[""].itemsize))
    return order[offset : offset + per_message], len(order)


def _evaluate_chunk(context: Context, config: RunConfig, client: ClientSlice, offset: int) -> Packet:
    started = time.perf_counter()
    data = client_dataset(context, config)
    chosen, evaluated = _chunk(context, config, offset)
    zs, ys = [], []
    aux_correct, aux_loss_sum = 0, 0.0
    client.bottom.eval()
    if client.aux is not None:
        client.aux.eval()
    with torch.no_grad(), client.placement.autocast():
        for start in range(0, len(chosen), EVAL_BATCH):
            x, y = test_tensors(data, chosen[start : start + EVAL_BATCH])
            x, y = client.placement.put(x), client.placement.put(y)
            z = client.bottom(x)
            if client.aux is not None:
                logits = client.aux(z)
                aux_correct += int((logits.argmax(1) == y).sum())
                aux_loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            zs.append(z)
            ys.append(y)
    next_offset = offset + len(chosen)
    info = EvaluateChunk(
        done=next_offset >= evaluated,
        next_offset=next_offset,
        aux_correct=aux_correct,
        aux_loss_sum=aux_loss_sum,
        handler_s=time.perf_counter() - started,
    ).as_info()
    if client.head is not None:  # U-shaped: the labels stay here, for the head (``_score_head``)
        return Packet({"activations": {"z": torch.cat(zs)}}, info)
    return Packet.upload(torch.cat(zs), torch.cat(ys), info)


def _score_head(context: Context, config: RunConfig, client: ClientSlice, request: Packet) -> Packet:
    """Run the head on the middle's ``z2`` of the chunk at ``head_offset``; only counts go back up."""
    assert client.head is not None, "only a U-shaped split's client holds a head"
    data = client_dataset(context, config)
    chosen, _ = _chunk(context, config, HeadRequest.of(request.info).head_offset)
    z2 = request.to(client.placement.device).activations
    if len(z2) != len(chosen):
        raise PayloadError(f"activations.z: {len(z2)} rows for a chunk of {len(chosen)} test samples")
    correct, loss_sum = 0, 0.0
    client.head.eval()
    with torch.no_grad(), client.placement.autocast():
        for start in range(0, len(chosen), EVAL_BATCH):
            _, y = test_tensors(data, chosen[start : start + EVAL_BATCH])
            logits = client.head(z2[start : start + EVAL_BATCH])
            y = client.placement.put(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
    return Packet(info=HeadScore(correct=correct, loss_sum=loss_sum, samples=len(chosen)).as_info())
