"""Drive a strategy's client and server halves through the real codec, in one process.

``drive_round`` plays one client's round the way ``apps.rounds.RoundDriver.train`` does (begin the
round, request, upload, reply, ... until done), without Flower, so strategy tests are fast and
deterministic.
"""

from __future__ import annotations

import time

import numpy as np
from torch import nn

from flsplit.config import RunConfig
from flsplit.data import PartitionLoader, load_dataset
from flsplit.device import Placement
from flsplit.optim import build_optimizer
from flsplit.protocol import RoundTag
from flsplit.split import activation_shape
from flsplit.wire import Packet, TensorSpec, decode, encode
from strategies import ClientHalf, ClientSlice, ServerHalf, SplitStrategy, get_strategy, parse_config
from apps.client_app import _train_once

BIG = 1 << 30


class ThroughClientApp(ClientHalf):
    """A strategy's client half as the ClientApp runs it: ``train`` and then the defences."""

    def __init__(self, half: ClientHalf) -> None:
        super().__init__(half.config)
        self.half = half

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        return _train_once(self.half, request, client, self.config, time.perf_counter())

    def request_specs(self, client: ClientSlice, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        return self.half.request_specs(client, activation_shape)


def make_config(**overrides: object) -> RunConfig:
    """Tiny synthetic setup: resnet20 cut after 3 blocks (z is 16x32x32), batches of 16."""
    raw = {"dataset": "synthetic", "model": "resnet20", "cut": 3, "batch-size": 16, "lr": 0.1, "weight-decay": 5e-4}
    return parse_config(raw | overrides)


def make_client(config: RunConfig, strategy: type[SplitStrategy] | str, steps: int = 1, partition: int = 0) -> ClientSlice:
    """A client slice of ``strategy`` over 64 synthetic samples, with one round of ``steps`` batches."""
    strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    placement = Placement.of(config.device, config.amp)
    modules = {name: module.to(placement.device) for name, module in strategy.client_modules(config).items()}
    params = [p for module in modules.values() for p in module.parameters()]
    loader = PartitionLoader(load_dataset("synthetic"), np.arange(64 * partition, 64 * (partition + 1)), config.batch_size, config.seed, partition)
    counters = {"step": 0, "round_start": 0, "round_end": steps, "round": 1}
    return ClientSlice(
        modules["bottom"], modules.get("aux"), build_optimizer(params, config), loader, counters,
        placement=placement, scaler=placement.scaler(), head=modules.get("head"),
    )


def make_server(config: RunConfig, strategy: type[SplitStrategy] | str, top: nn.Module) -> ServerHalf:
    """The strategy's server half over ``top``, moved to the config's server device."""
    strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    top = top.to(Placement.of(config.server_device_name, config.amp).device)
    return strategy.server(top, build_optimizer(list(top.parameters()), config), config)


def next_round(client: ClientSlice, steps: int) -> None:
    """Start the client's next round of ``steps`` batches (as the ClientApp does)."""
    client.counters["round"] += 1
    client.counters["round_start"] = client.counters["step"]
    client.counters["round_end"] = client.counters["step"] + steps


def through_wire(packet: Packet, specs: list[TensorSpec]) -> Packet:
    """Encode and decode, validating as a receiver would (specs apply only to tensor payloads)."""
    return decode(encode(packet), specs if packet.tensors else [])


def drive_round(
    half: ClientHalf,
    server: ServerHalf,
    client: ClientSlice,
    client_id: int = 0,
    round_number: int = 1,
    max_bytes: int = BIG,
    drop_live: bool = False,
    begin: bool = True,
) -> tuple[list[Packet], list[Packet]]:
    """One client's round; returns the requests it received and the uploads it sent.

    ``drop_live`` clears the client's in-process objects before every request, as when each
    message runs in a new process (deployment). ``begin=False`` skips ``begin_round`` (for
    several clients in one round).
    """
    shape = activation_shape(half.config)
    if begin:
        server.begin_round(round_number)
    request = server.request(client_id)
    requests, uploads = [], []
    while True:
        request.info |= RoundTag(round_number).as_info()
        request = through_wire(request, half.request_specs(client, shape)).to(client.placement.device)
        requests.append(request)
        upload = through_wire(half.train(request, client, max_bytes), server.upload_specs_of(client_id, shape))
        server.check_upload(upload)
        upload = upload.to(server.placement.device)
        uploads.append(upload)
        reply = server.on_upload(client_id, upload) if upload.tensors else None
        if upload.info["done"]:
            return requests, uploads
        if drop_live:
            client.live.clear()
        request = reply or server.request(client_id)
