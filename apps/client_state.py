"""A client's slice, kept in ``context.state`` so it survives any engine.

In simulation a node's messages run on any Ray worker, and in deployment every message is a
new process, so the slice (weights, auxiliary head, optimizer state, counters) is written
to the node's Flower state after every message. A per-process cache keeps the live objects
(and an autograd graph) when the next message lands on the same process; a version token in
the state tells whether the cached copy is still the current one, so the cache can never
serve stale weights.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context

from flsplit import checkpoint
from flsplit.config import RunConfig
from flsplit.data import DataOptions, Dataset, PartitionLoader, load_dataset, partition_indices
from flsplit.device import Placement, host_optimizer_steps, set_deterministic, to_host
from flsplit.optim import build_optimizer
from flsplit.slowdown import parse_slowdown
from flsplit.wire import load_weights, weights_of
from strategies import ClientSlice, SplitStrategy

WEIGHTS, OPTIMIZER, COUNTERS = "flsplit.weights", "flsplit.optimizer", "flsplit.counters"
SCALER = "flsplit.scaler"  # the fp16 gradient scaler's state (CUDA only)
RUN = "flsplit.run"  # where this run keeps client checkpoints
# Most recently used first out: a CSL slice holds its pending autograd graph (tens of MB), so
# an unbounded cache grows with the number of nodes a simulation worker serves.
_LIVE: OrderedDict[tuple[int, int], tuple[str, ClientSlice]] = OrderedDict()


def drop_cached_slices(run_id: int | None = None, node_id: int | None = None) -> None:
    """Forget this process's live slices (all, or one node's), as if the next message ran elsewhere."""
    for key in [k for k in _LIVE if (run_id, node_id) in ((None, None), k)]:
        del _LIVE[key]


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


def node_cut(context: Context, config: RunConfig) -> str:
    """This node's cut: its own ``cut`` (node config, on a SuperNode), else ``cuts`` by partition, else the run's."""
    own = context.node_config.get("cut")
    return str(own) if own is not None else config.cut_of(partition_of(context)[0])


def as_node_runs_it(context: Context, config: RunConfig) -> RunConfig:
    """The run config with this node's own cut; a cut the model cannot serve is a ``ConfigError`` naming where it came from."""
    source = "node-config cut" if "cut" in context.node_config else "cuts" if config.cuts else "cut"
    return _with_cut(config, node_cut(context, config), source)


@lru_cache(maxsize=8)
def _with_cut(config: RunConfig, cut: str, source: str) -> RunConfig:
    # Every message asks for its node's config: checked and copied once per process, not per message.
    return config.with_cut(cut, source)


def node_slowdown(context: Context, config: RunConfig) -> float:
    """This node's simulated slowdown: its own ``slowdown`` (node config), else ``slowdowns`` by partition, else 1."""
    own = context.node_config.get("slowdown")
    return parse_slowdown(own, "node-config slowdown") if own is not None else config.slowdown_of(partition_of(context)[0])


def data_dir_of(context: Context, config: RunConfig) -> str:
    """The node's own ``data-dir`` (node config) wins over the run config's."""
    return str(context.node_config.get("data-dir", config.data_dir))


@lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str, seed: int, options: DataOptions) -> Dataset:
    return load_dataset(name, data_dir, seed, options)


@lru_cache(maxsize=8)
def _partition(config: RunConfig, data_dir: str, partition_id: int, num_partitions: int) -> np.ndarray:
    data = _dataset(config.dataset, data_dir, config.seed, config.data_options)
    return partition_indices(
        data.train.labels,
        partition_id,
        num_partitions,
        config.partition,
        config.dirichlet_alpha,
        config.classes_per_client,
        config.data_seed,
    )


def client_dataset(context: Context, config: RunConfig) -> Dataset:
    """The dataset this node reads (decoded once per process)."""
    return _dataset(config.dataset, data_dir_of(context, config), config.seed, config.data_options)


def client_loader(context: Context, config: RunConfig) -> PartitionLoader:
    """This node's partition as a deterministic batch loader."""
    partition_id, num_partitions = partition_of(context)
    data_dir = data_dir_of(context, config)
    indices = _partition(config, data_dir, partition_id, num_partitions)
    return PartitionLoader(_dataset(config.dataset, data_dir, config.seed, config.data_options), indices, config.batch_size, config.seed, partition_id)


@lru_cache(maxsize=4)
def client_placement(device: str, amp: str, deterministic: bool = False) -> Placement:
    """This process's client device (resolved once; Ray's GPU for this worker is ``cuda`` here)."""
    set_deterministic(deterministic)
    return Placement.of(device, amp)


def load_slice(context: Context, config: RunConfig, strategy: type[SplitStrategy], fresh: bool = False) -> ClientSlice:
    """The node's current slice: from the process cache if current, else rebuilt from state.

    ``fresh`` ignores any saved state and returns the seeded initial slice.
    """
    key = (context.run_id, context.node_id)
    counters = None if fresh else context.state.config_records.get(COUNTERS)
    version = str(counters["version"]) if counters is not None else None
    cached = _LIVE.get(key)
    if cached is not None and version is not None and cached[0] == version:
        _LIVE.move_to_end(key)
        return cached[1]
    placement = client_placement(config.device, config.amp, config.deterministic)
    # Modules on the device first, then the optimizer over their (moved) parameters.
    modules = {name: module.to(placement.device) for name, module in strategy.client_modules(config).items()}
    params = [p for module in modules.values() for p in module.parameters()]  # bottom, aux, head: a fixed order
    optimizer = build_optimizer(params, config)
    start = {"step": 0, "round_end": 0, "round": 0}
    client = ClientSlice(
        modules["bottom"], modules.get("aux"), optimizer, client_loader(context, config), start,
        placement=placement, scaler=placement.scaler(), head=modules.get("head"),
    )
    if counters is not None:
        _restore(context, client, counters)
    return client


def save_slice(context: Context, client: ClientSlice, keep: int = 8) -> None:
    """Write the slice to the node's state and make it the cached current version.

    The process keeps at most ``keep`` slices live (the ``client-cache`` key); an evicted
    node's next message rebuilds its slice from the state.
    """
    version = uuid.uuid4().hex
    snapshot = _snapshot(client)
    context.state[WEIGHTS] = ArrayRecord({k: Array(v.numpy()) for k, v in to_host(snapshot["weights"]).items()})
    context.state[OPTIMIZER] = ArrayRecord({k: Array(v.numpy()) for k, v in to_host(snapshot["optimizer"]).items()})
    context.state[COUNTERS] = ConfigRecord({**client.counters, "version": version})
    if snapshot["scaler"]:
        context.state[SCALER] = ConfigRecord(snapshot["scaler"])
    key = (context.run_id, context.node_id)
    _LIVE[key] = (version, client)
    _LIVE.move_to_end(key)
    while len(_LIVE) > keep:
        _LIVE.popitem(last=False)


def _checkpoint_path(context: Context, round_number: int) -> Path:
    partition_id, _ = partition_of(context)
    return checkpoint.client_checkpoint_path(str(context.state[RUN]["clients_dir"]), round_number, partition_id)


def write_checkpoint(context: Context, config: RunConfig, client: ClientSlice, round_number: int) -> None:
    """Save the slice as this partition's checkpoint of ``round_number`` (atomically).

    The one of two rounds before is pruned unless ``keep-rounds`` keeps it for the privacy attacks.
    """
    checkpoint.save_atomic(_snapshot(client), _checkpoint_path(context, round_number))
    if not config.keeps_round(round_number - 2):
        _checkpoint_path(context, round_number - 2).unlink(missing_ok=True)


def restore_checkpoint(context: Context, config: RunConfig, strategy: type[SplitStrategy], round_number: int) -> None:
    """Load this partition's newest checkpoint from ``round_number`` or the round before.

    A client that failed in the last round has no checkpoint of it and continues from the
    one before (its slice is then one round older than in an uninterrupted run).
    """
    for candidate in (_checkpoint_path(context, round_number), _checkpoint_path(context, round_number - 1)):
        if candidate.exists():
            client = load_slice(context, config, strategy, fresh=True)
            # Onto this run's device, whichever device wrote the checkpoint.
            _apply_snapshot(client, checkpoint.load(candidate, client.placement.device))
            save_slice(context, client, config.client_cache)
            return
    raise FileNotFoundError(f"resume: no checkpoint at {candidate} or the round before")


def _params(client: ClientSlice) -> list[torch.nn.Parameter]:
    return [p for group in client.optimizer.param_groups for p in group["params"]]


def _snapshot(client: ClientSlice) -> dict:
    """Weights, counters, and every tensor of the optimizer's per-parameter state.

    The state is keyed ``"<parameter index>/<name>"`` (SGD: ``momentum_buffer``; Adam:
    ``exp_avg``, ``exp_avg_sq`` and ``step``), so any per-parameter torch optimizer survives.
    """
    state = {}
    for index, param in enumerate(_params(client)):
        for name, value in client.optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor):
                state[f"{index}/{name}"] = value.detach().clone()
    weights = {k: v.detach().clone() for k, v in weights_of(client.modules()).items()}
    scaler = client.scaler.state_dict()  # empty unless the scaler is enabled (fp16 on CUDA)
    return {"weights": weights, "optimizer": state, "counters": dict(client.counters), "scaler": scaler}


def _apply_snapshot(client: ClientSlice, snapshot: dict) -> None:
    """Load a snapshot onto the slice's device (optimizer state beside its parameter)."""
    load_weights(client.modules(), snapshot["weights"])
    params = _params(client)
    for key, value in snapshot["optimizer"].items():
        index, name = key.split("/", 1)
        param = params[int(index)]
        client.optimizer.state[param][name] = value.to(param.device, copy=True)
    host_optimizer_steps(client.optimizer)
    client.counters = {k: int(v) for k, v in snapshot["counters"].items() if k != "version"}
    if snapshot.get("scaler") and client.scaler.is_enabled():
        client.scaler.load_state_dict(dict(snapshot["scaler"]))


def _restore(context: Context, client: ClientSlice, counters: ConfigRecord) -> None:
    # Array.numpy() already returns a fresh, writable array, and _apply_snapshot copies it into
    # the parameters and the optimizer state: one copy each, not two.
    snapshot = {
        "weights": {k: torch.from_numpy(v.numpy()) for k, v in context.state[WEIGHTS].items()},
        "optimizer": {k: torch.from_numpy(v.numpy()) for k, v in context.state[OPTIMIZER].items()},
        "counters": dict(counters),
        "scaler": dict(context.state.config_records.get(SCALER, {})),
    }
    _apply_snapshot(client, snapshot)
