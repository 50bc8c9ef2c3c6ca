"""A client's slice, kept in ``context.state`` so it survives any engine.

In simulation a node's messages run on any Ray worker, and in deployment every message is a
new process, so the slice (weights, auxiliary head, optimizer momentum, counters) is written
to the node's Flower state after every message. A per-process cache keeps the live objects
(and an autograd graph) when the next message lands on the same process; a version token in
the state tells whether the cached copy is still the current one, so the cache can never
serve stale weights.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context

from flsplit.config import RunConfig
from flsplit.data import Dataset, PartitionLoader, load_dataset, partition_indices
from flsplit.split import build_halves, sgd
from flsplit.wire import load_weights, weights_of
from strategies import ClientSlice

WEIGHTS, MOMENTUM, COUNTERS = "flsplit.weights", "flsplit.momentum", "flsplit.counters"
_LIVE: dict[tuple[int, int], tuple[str, ClientSlice]] = {}


def partition_of(context: Context) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` from the node config."""
    node = context.node_config
    try:
        return int(node["partition-id"]), int(node["num-partitions"])
    except KeyError as err:
        raise ValueError(
            f"node-config: missing {err}; start the SuperNode with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        ) from None


def data_dir_of(context: Context, config: RunConfig) -> str:
    """The node's own ``data-dir`` (node config) wins over the run config's."""
    return str(context.node_config.get("data-dir", config.data_dir))


@lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str, seed: int) -> Dataset:
    return load_dataset(name, data_dir, seed)


@lru_cache(maxsize=8)
def _partition(config: RunConfig, data_dir: str, partition_id: int, num_partitions: int) -> np.ndarray:
    data = _dataset(config.dataset, data_dir, config.seed)
    return partition_indices(
        data.train.labels,
        partition_id,
        num_partitions,
        config.partition,
        config.dirichlet_alpha,
        config.classes_per_client,
        config.seed,
    )


def client_dataset(context: Context, config: RunConfig) -> Dataset:
    """The dataset this node reads (decoded once per process)."""
    return _dataset(config.dataset, data_dir_of(context, config), config.seed)


def client_loader(context: Context, config: RunConfig) -> PartitionLoader:
    """This node's partition as a deterministic batch loader."""
    partition_id, num_partitions = partition_of(context)
    data_dir = data_dir_of(context, config)
    indices = _partition(config, data_dir, partition_id, num_partitions)
    return PartitionLoader(_dataset(config.dataset, data_dir, config.seed), indices, config.batch_size, config.seed, partition_id)


def load_slice(context: Context, config: RunConfig, with_aux: bool) -> ClientSlice:
    """The node's current slice: from the process cache if current, else rebuilt from state."""
    key = (context.run_id, context.node_id)
    counters = context.state.config_records.get(COUNTERS)
    version = str(counters["version"]) if counters is not None else None
    cached = _LIVE.get(key)
    if cached is not None and version is not None and cached[0] == version:
        return cached[1]
    bottom, _, aux = build_halves(config)
    head = aux if with_aux else None
    params = list(bottom.parameters()) + (list(head.parameters()) if head is not None else [])
    client = ClientSlice(bottom, head, sgd(params, config), client_loader(context, config), {"step": 0, "round_end": 0, "round": 0})
    if counters is not None:
        _restore(context, client, counters)
    return client


def save_slice(context: Context, client: ClientSlice) -> None:
    """Write the slice to the node's state and make it the cached current version."""
    version = uuid.uuid4().hex
    context.state[WEIGHTS] = ArrayRecord({k: Array(v.detach().numpy()) for k, v in weights_of(client.modules()).items()})
    momentum = {}
    for index, param in enumerate(p for group in client.optimizer.param_groups for p in group["params"]):
        buffer = client.optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            momentum[str(index)] = Array(buffer.detach().numpy())
    context.state[MOMENTUM] = ArrayRecord(momentum)
    context.state[COUNTERS] = ConfigRecord({**client.counters, "version": version})
    _LIVE[(context.run_id, context.node_id)] = (version, client)


def _restore(context: Context, client: ClientSlice, counters: ConfigRecord) -> None:
    weights = {k: torch.from_numpy(v.numpy().copy()) for k, v in context.state[WEIGHTS].items()}
    load_weights(client.modules(), weights)
    params = [p for group in client.optimizer.param_groups for p in group["params"]]
    for index, array in context.state[MOMENTUM].items():
        client.optimizer.state[params[int(index)]]["momentum_buffer"] = torch.from_numpy(array.numpy().copy())
    client.counters = {k: int(v) for k, v in counters.items() if k != "version"}  # type: ignore[arg-type]
