"""The strategy contract: a client half and a server half, and the registry that names them.

A strategy is the algorithm only. The apps move its packets as Flower messages, persist the
client's state between messages, count bytes and run evaluation; a strategy never sees a
Grid, a Message or a Context. ``docs/strategies.md`` describes the contract for plug-ins.

A round, as the apps drive it: ``ServerHalf.begin_round``; then, per client, a request from
``ServerHalf.request`` and an exchange of ``ClientHalf.train`` uploads and
``ServerHalf.on_upload`` replies until the client says it is done; then, if the strategy
aggregates, the client modules named by ``SplitStrategy.aggregated_modules`` are averaged
with the Flower strategy named by the ``aggregation`` key; then ``ServerHalf.end_round``.

Two choices shape every strategy with client slices, and both are decided here once:
``SplitStrategy.sync_of`` (``client-sync``: how the clients' slices are kept in step) and
``SplitStrategy.order_of``/``serving_groups`` (``serve-order``: who the server serves when).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flsplit.config import ConfigError, RunConfig, StrategyParams, parse_run_config
from flsplit.data import PartitionLoader
from flsplit.device import Placement, device_of, host_optimizer_steps
from flsplit.metering import Stopwatch
from flsplit.privacy.defences import refuse_idle_defences
from flsplit.split import build_halves
from flsplit.wire import Packet, PayloadError, TensorSpec, all_finite, upload_specs

#: The chunk bound (``chunk-mb``) counts activations as float32, whatever autocast made them.
FLOAT32_BYTES = 4


@dataclass
class ClientSlice:
    """A client's trainable state between messages.

    ``counters`` (``step``: next batch; ``round_start``/``round_end``: first batch of this
    round and of the next, plus whatever a strategy adds) are persisted with the weights and
    optimizer. ``aux`` is the client's second trainable module, if the strategy has one (an
    auxiliary head; for ``fedavg`` the rest of the network). ``live`` holds
    in-process objects such as an autograd graph; it is empty whenever the slice was rebuilt
    from persisted state in another process, and a strategy must cope with that.
    """

    bottom: nn.Sequential
    aux: nn.Module | None
    optimizer: torch.optim.Optimizer
    loader: PartitionLoader
    counters: dict[str, int]
    watch: Stopwatch = field(default_factory=Stopwatch)
    live: dict[str, Any] = field(default_factory=dict)
    #: Where the slice computes and in which precision; its modules and batches live there.
    placement: Placement = field(default_factory=Placement)
    #: Scales the client's loss (or the server's gradient) for ``fp16`` on CUDA; passes through otherwise.
    scaler: torch.amp.GradScaler = field(default_factory=lambda: Placement().scaler())
    #: The network's last layers and the loss, held by the client in a U-shaped split.
    head: nn.Module | None = None

    def modules(self) -> dict[str, nn.Module]:
        """The trainable modules by name (``bottom``; ``aux`` and ``head`` where the strategy has them)."""
        optional = {"aux": self.aux, "head": self.head}
        return {"bottom": self.bottom} | {name: module for name, module in optional.items() if module is not None}

    def next_batch(self) -> tuple[int, torch.Tensor, torch.Tensor] | None:
        """The next batch of this round as ``(step, x, y)``, or ``None`` when the round is done."""
        step = self.counters["step"]
        if step >= self.counters["round_end"]:
            return None
        self.counters["step"] = step + 1
        return (step, *self.batch(step))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of the partition as ``(x, y)`` on the slice's device."""
        x, y = self.loader.batch(step)
        return self.placement.put(x), self.placement.put(y)

    def step(self, loss: torch.Tensor | None = None) -> None:
        """Backpropagate ``loss`` (if given) and step the optimizer, through the gradient scaler.

        Without ``fp16`` on CUDA this is ``loss.backward()`` and ``optimizer.step()``.
        """
        if loss is not None:
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def local_iteration(self, step: int) -> int:
        """Position of batch ``step`` within this round (0 for the round's first batch)."""
        return step - self.counters.get("round_start", 0)


class ClientHalf(ABC):
    """What a client does with one training request from the server."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @abstractmethod
    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        """Train on the next batches and return the upload (``info["done"]`` ends the round)."""

    def download_specs(self, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        """What a training request from the server may carry (default: no tensors)."""
        return []

    def request_specs(self, client: ClientSlice, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        """What the next request to ``client`` must carry, given what the client last sent.

        Default: ``download_specs``, the same for every request. A strategy whose requests
        alternate (a U-shaped split sends ``z2``, then ``dL/dz1``) keys them by its counters.
        """
        return self.download_specs(activation_shape)


class ServerHalf(ABC):
    """What the server does with one upload. It owns the top slice and its optimizer."""

    #: If False, the next request to a client does not depend on its upload, so the app sends
    #: it before training on the upload and client and server compute overlap.
    replies_to_uploads: bool = True

    def __init__(self, top: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig) -> None:
        self.top, self.optimizer, self.config = top, optimizer, config
        #: The server's device (where ``top`` lives) and the run's autocast precision.
        self.placement = Placement(device_of([top]), config.amp)
        self.scaler = self.placement.scaler()
        self.watch = Stopwatch()
        #: Each client's partition size (client index -> examples), set once the clients are known.
        self.partition_sizes: dict[int, int] = {}
        #: With a cut per node: blocks of ``top`` each client's own slice already holds (client
        #: index -> count; 0 or absent: it enters at the top's first block). Set with the clients.
        self.entry_offsets: dict[int, int] = {}
        self._loss_sum, self._correct, self._samples = 0.0, 0, 0

    def attach_run(self, run_dir: Path, partitions: dict[int, int]) -> None:
        """Called once the clients are known, with the run's folder and each client's partition id
        (by client index), for a strategy that writes files of its own (U-shaped splits record
        the ``dL/dz2`` they receive, ``flsplit.privacy.gradient_record``)."""

    def begin_round(self, round_number: int) -> None:
        """Called once before the round's first request (FSL-SAGE aligns its estimators here)."""

    def request(self, client_id: int) -> Packet:
        """A request to ``client_id`` that depends on no upload (round start; pipelined requests)."""
        return Packet()

    def awaits_reply(self, client_id: int) -> bool:
        """Whether ``client_id``'s next request must wait for the reply to its current upload.

        ``replies_to_uploads`` by default; a strategy may answer differently per upload
        (FSL-SAGE holds a client back only while its estimator is being aligned).
        """
        return self.replies_to_uploads

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers that follow the run's learning-rate schedule (extend for more)."""
        return [self.optimizer]

    def entry(self, client_id: int, top: nn.Sequential | None = None) -> nn.Sequential:
        """The part of ``top`` (default: the shared top slice) that ``client_id``'s activations enter.

        With one cut for all it is the whole top; a client with a deeper cut skips the blocks
        its own slice holds. The blocks are shared, not copied, so training the entry trains the top.
        """
        top = self.top if top is None else top
        offset = self.entry_offsets.get(client_id, 0)
        return top[offset:] if offset else top  # type: ignore[return-value]

    def top_copies(self) -> list[tuple[nn.Module, list[int]]]:
        """Each copy of the top slice this server trains, with the clients whose uploads trained it
        this round (for layer-wise averaging, ``flsplit.layerwise``): one shared copy, for every client."""
        return [(self.top, sorted(self.partition_sizes))]

    def load_averaged_top(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Continue from layer-wise averaged weights of some of the top's blocks (``Sequential`` keys)."""
        self.top.load_state_dict(dict(weights), strict=False)

    @abstractmethod
    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        """Train on a client's upload; return what goes back, or ``None`` if nothing does."""

    def end_round(self, round_number: int, aggregated: dict[str, torch.Tensor] | None) -> None:
        """Called after the round's aggregation with the averaged client weights (if any)."""

    def check_upload(self, upload: Packet) -> None:
        """Reject a decoded upload whose ``info`` does not fit its tensors (``PayloadError``).

        The codec has already checked the tensors against ``upload_specs``; a strategy whose
        uploads carry more control information extends this.
        """
        if upload.tensors:
            batch_sizes(upload, len(upload.labels), self.config.batch_size)

    def upload_specs(self, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        """What an upload carrying data must contain: activations and their labels."""
        return upload_specs(activation_shape, self.config.num_classes)

    def upload_specs_of(self, client_id: int, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        """What ``client_id``'s next upload must contain, given what the server last asked it for.

        Default: ``upload_specs``, the same for every upload and client. A strategy whose
        uploads alternate (a U-shaped split: ``z1``, then ``dL/dz2``) answers per client.
        """
        return self.upload_specs(activation_shape)

    def train_batches(
        self,
        upload: Packet,
        keep_input_grad: bool = False,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> torch.Tensor | None:
        """One optimizer step of the top slice (or of ``model``) per batch in ``upload``.

        Returns ``dL/dz`` for the whole upload when ``keep_input_grad`` is set.
        """
        model = model or self.top
        optimizer = optimizer or self.optimizer
        z_all = upload.activations
        y_all = upload.labels
        sizes = batch_sizes(upload, len(y_all), self.config.batch_size)
        grads = []
        model.train()
        with self.watch.time("server"):
            for z, y in zip(z_all.split(sizes), y_all.split(sizes)):
                z = z.detach().requires_grad_(keep_input_grad)
                with self.placement.autocast():
                    logits = model(z)
                    loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
                self.scaler.update()
                self._loss_sum += loss.item() * len(y)
                self._correct += int((logits.argmax(1) == y).sum())
                self._samples += len(y)
                if keep_input_grad:
                    grads.append(unscaled(z.grad, scale))
        return torch.cat(grads) if keep_input_grad else None

    def take_metrics(self) -> dict[str, float]:
        """Mean training loss and accuracy of the top slice since the last call."""
        n = max(self._samples, 1)
        out = {"train_loss": self._loss_sum / n, "train_accuracy": self._correct / n}
        self._loss_sum, self._correct, self._samples = 0.0, 0, 0
        return out

    def trained_state(self) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
        """The models and optimizers this server trains (what its peak memory counts); extend it."""
        return [self.top], [self.optimizer]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this server half after a round (extend, don't replace)."""
        return {"top": self.top.state_dict(), "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (onto this server's device, whatever it was saved on)."""
        self.top.load_state_dict(state["top"])
        self.optimizer.load_state_dict(state["optimizer"])
        host_optimizer_steps(self.optimizer)
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def unscaled(grad: torch.Tensor, scale: float) -> torch.Tensor:
    """``dL/dz`` from the gradient of a loss scaled by ``scale`` (fp16 on CUDA; else ``grad`` itself).

    A batch whose scaled gradient overflowed (the scaler skipped the server's step) sends
    zeros, so the client's step on it applies no gradient; the payload stays finite.
    """
    if scale == 1.0:
        return grad
    grad = grad / scale
    return grad if all_finite(grad) else torch.zeros_like(grad)


def batch_sizes(upload: Packet, total: int, max_batch: int) -> list[int]:
    """The upload's per-batch sizes, checked against its sample count and the batch size."""
    sizes = upload.info.get("batch_sizes", [total])
    if not isinstance(sizes, list) or not all(isinstance(s, int) and 0 < s <= max_batch for s in sizes):
        raise PayloadError(f"info.batch_sizes: {sizes!r} is not a list of sizes in 1..{max_batch}")
    if sum(sizes) != total:
        raise PayloadError(f"info.batch_sizes: sums to {sum(sizes)}, but {total} samples came")
    return sizes


#: The ``client-sync`` values, in the order of how much the clients share.
CLIENT_SYNCS = ("none", "relay", "average")


def _requested_sync(strategy: type[SplitStrategy], config: RunConfig) -> str:
    return config.client_sync or ("average" if config.aggregate_clients else strategy.client_sync)


class SplitStrategy:
    """A named pair of halves. Subclass, set the attributes, and decorate with ``@register``."""

    name: str = ""
    #: ``label-sharing``: the server holds the network's top and the loss, so labels go up.
    #: ``u-shaped``: the client holds the head too (``ClientSlice.head``); no label leaves it.
    topology: str = "label-sharing"
    #: The client trains a second module besides its bottom slice (see ``client_modules``).
    uses_aux_head: bool = False
    #: How the client slices are kept in step when ``client-sync`` is empty: ``none`` (each
    #: client keeps its own slice), ``relay`` (each client starts from the previous client's
    #: slice, as vanilla split learning) or ``average`` (slices averaged after every round).
    client_sync: str = "none"
    #: The ``client-sync`` values the strategy admits; a strategy defined by its averaging
    #: (``splitfed-v1``, ``splitfed-v2``, ``fedavg``) admits ``average`` alone.
    client_syncs: tuple[str, ...] = CLIENT_SYNCS
    #: What to run instead of a refused ``client-sync`` (a strategy may name its twin).
    sync_hint: str = ""
    #: Which client modules are averaged (or relayed) when the strategy syncs its clients.
    aggregated_modules: tuple[str, ...] = ("bottom", "aux")
    #: How the server serves its clients in a round when ``serve-order`` is not set:
    #: ``interleaved`` (one upload of each in turn), ``sequential`` (one client's whole round,
    #: then the next, in partition order, as SplitFed-V2's references do) or ``shuffled``
    #: (sequential in a random order drawn each round from ``seed`` and the round number).
    serve_order: str = "interleaved"
    #: Whether clients may have different cuts (``cuts``, a node's own ``cut``): the server's
    #: slice then serves every depth (``ServerHalf.entry``) and averaging is layer-wise.
    mixes_cuts: bool = False
    #: Whether clients upload cut-layer activations (and labels); ``fedavg``'s do not, so it
    #: refuses the privacy defences' keys (``flsplit.privacy.defences.refuse_idle_defences``).
    uploads_activations: bool = True
    #: Whether ``asynchronous = true`` may serve it (``apps.async_rounds``): its server never
    #: answers an upload, so it can take uploads in arrival order, and a partial epoch is a
    #: valid round for its clients. DSL opts in; its variants that answer (FSL-SAGE's
    #: alignment, hybrid's gradients, U-shaped heads) or skip uploads (CSE-FSL) do not.
    serves_asynchronously: bool = False
    #: The strategy's own run-config keys, if it has any (``config.params`` at run time).
    params: type[StrategyParams] | None = None
    client: type[ClientHalf]
    server: type[ServerHalf]

    @classmethod
    def sync_of(cls, config: RunConfig) -> str:
        """This run's client sync: ``client-sync``, else ``average`` for the old ``aggregate-clients
        = true``, else the strategy's own; a value the strategy does not admit is a ``ConfigError``."""
        sync = _requested_sync(cls, config)
        if sync not in cls.client_syncs:
            raise ConfigError(
                f"invalid run config:\n  - client-sync: strategy '{cls.name}' admits {list(cls.client_syncs)}, "
                f"not '{sync}'; {cls.sync_hint or 'leave client-sync empty for its own'}"
            )
        return sync

    @classmethod
    def check_cuts(cls, config: RunConfig, cuts: Collection[int], where: str = "cuts") -> None:
        """Refuse clients of different cuts (``cuts``: each client's, in blocks) unless this run can serve them."""
        if len(set(cuts)) < 2:
            return
        mixing = sorted(name for name, strategy in _REGISTRY.items() if strategy.mixes_cuts)
        reason = "" if cls.mixes_cuts else f"strategy '{cls.name}' needs one cut for all clients; run one of {mixing}"
        if cls.mixes_cuts and cls.relays(config):
            reason = 'client-sync = "relay" hands one slice from client to client; choose "none" or "average"'
        if reason:
            raise ConfigError(
                f"invalid run config:\n  - {where}: clients with different cuts (blocks {sorted(set(cuts))}), but {reason}, "
                "or give every node the same cut"
            )

    @classmethod
    def aggregates(cls, config: RunConfig) -> bool:
        """Whether client slices are averaged after each round of this run."""
        return cls.sync_of(config) == "average"

    @classmethod
    def relays(cls, config: RunConfig) -> bool:
        """Whether each client starts its round from the slice of the client served before it."""
        return cls.sync_of(config) == "relay"

    @classmethod
    def order_of(cls, config: RunConfig) -> str:
        """This run's serving order: ``serve-order``, else the strategy's own; a relayed run
        whose strategy would interleave is served ``sequential`` (a slice is in one place at a time)."""
        if config.serve_order:
            return config.serve_order
        relayed = _requested_sync(cls, config) == "relay"
        return "sequential" if relayed and cls.serve_order == "interleaved" else cls.serve_order

    @classmethod
    def serves_sequentially(cls, config: RunConfig) -> bool:
        """Whether this run serves one client's whole round before the next client starts."""
        return cls.order_of(config) != "interleaved"

    @classmethod
    def serving_groups(cls, config: RunConfig, round_number: int, num_clients: int) -> list[list[int]]:
        """The clients (by index, in partition order) served together, group after group, in a round.

        Interleaved: one group of every client. Sequential: one client at a time in partition
        order. Shuffled: one at a time in a permutation seeded by ``seed`` and the round number,
        so a seed fixes every round's order, a resumed run repeats it, and rounds differ.
        """
        order = cls.order_of(config)
        if order == "interleaved":
            return [list(range(num_clients))]
        if order == "shuffled":
            return [[int(i)] for i in np.random.default_rng([config.seed, round_number]).permutation(num_clients)]
        return [[i] for i in range(num_clients)]

    @classmethod
    def client_modules(cls, config: RunConfig) -> dict[str, nn.Module]:
        """The client's trainable modules by name, initialised from the seed.

        ``bottom`` is the client's slice; ``aux`` (if ``uses_aux_head``) the configured head.
        Every party calls this with the same config and gets the same weights.
        """
        bottom, _, aux = build_halves(config)
        return {"bottom": bottom} | ({"aux": aux} if cls.uses_aux_head else {})

    @classmethod
    def server_slice(cls, config: RunConfig) -> nn.Sequential:
        """The server's trainable slice, initialised from the seed (the top half; a U-shaped split's middle)."""
        return build_halves(config)[1]

    @classmethod
    def synced_modules(cls, modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """The subset of ``modules`` that aggregation averages."""
        return {name: module for name, module in modules.items() if name in cls.aggregated_modules}


_REGISTRY: dict[str, type[SplitStrategy]] = {}


def register(strategy: type[SplitStrategy]) -> type[SplitStrategy]:
    """Make a strategy selectable by its ``name`` in the ``strategy`` run-config key.

    A name already taken by another class is an error, so a plug-in can never silently replace
    a built-in; the same class registered again (its module re-imported) is not.
    """
    if not strategy.name:
        raise ValueError(f"{strategy.__qualname__} needs a non-empty 'name'")
    taken = _REGISTRY.get(strategy.name)
    if taken is not None and _class_path(taken) != _class_path(strategy):
        raise ValueError(
            f"strategy name '{strategy.name}' is registered by {_class_path(taken)}; "
            f"give {_class_path(strategy)} a name of its own"
        )
    _REGISTRY[strategy.name] = strategy
    return strategy


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def strategy_names() -> list[str]:
    """Names of all registered strategies."""
    return sorted(_REGISTRY)


def parse_config(raw: Mapping[str, Any], from_flower: bool = False) -> RunConfig:
    """Validate a run config together with the settings of the strategies it may name.

    Every registered strategy's keys are known (``pyproject.toml`` sets them all); a plug-in
    named by dotted path is imported so that its own keys are too. ``from_flower``: ``raw`` is
    a Flower run config, whose keys the app's ``pyproject.toml`` declares and ``flwr run``
    has already checked, so keys of plug-ins other than the selected one are ignored.
    """
    params = {name: strategy.params for name, strategy in _REGISTRY.items()}
    name = raw.get("strategy", "")
    error = ""
    if isinstance(name, str) and name not in params and "." in name.replace(":", "."):
        try:
            params[name] = get_strategy(name).params
        except ValueError as err:
            error = str(err).removeprefix("strategy: ")  # joins the report as the strategy key's problem
    config = parse_run_config(raw, strategies=params, declared=raw if from_flower else (), strategy_error=error)
    strategy = get_strategy(config.strategy)
    refuse_idle_defences(config, config.strategy, strategy.uploads_activations, strategy.topology == "u-shaped")
    strategy.check_cuts(config, config.declared_cut_blocks)
    if config.asynchronous and not strategy.serves_asynchronously:
        raise ConfigError(
            f"invalid run config:\n  - asynchronous: strategy '{config.strategy}' cannot be served asynchronously "
            "(its server answers uploads, or its clients skip them); use strategy = \"dsl\", or set asynchronous = false"
        )
    return config


def get_strategy(name: str) -> type[SplitStrategy]:
    """Look up a strategy by registered name, or import it from ``package.module:Class``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    module_name, _, attr = name.replace(":", ".").rpartition(".")
    if module_name:
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except Exception as err:  # noqa: BLE001 - whatever a plug-in's import raises, name it with the path
            raise ValueError(f"strategy: cannot import '{name}' ({type(err).__name__}: {err})") from None
        if isinstance(found, type) and issubclass(found, SplitStrategy):
            return found
        raise ValueError(f"strategy: '{name}' is {found!r}, not a SplitStrategy subclass")
    raise ValueError(f"strategy: unknown strategy '{name}'; choose one of {strategy_names()}")
