"""SplitFed-V1 (Thapa et al., 2022): one server-side copy of the top slice per client.

Each client's batches train its own copy of the top slice (with its own optimizer), and the
server's gradient goes back as in CSL. After every round the copies are averaged, weighted by
each client's partition size (as the client slices are), through the Flower strategy named by ``aggregation``
(the same rule that averages the client slices), and every copy restarts from the average.
Averaging the copies is server-internal and costs no communication. "SplitFed-MS" (multiple
servers) in FSL-SAGE's figures.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from flsplit.aggregation import aggregate_weights, build_aggregator
from flsplit.config import RunConfig
from flsplit.device import host_optimizer_steps
from flsplit.optim import build_optimizer, set_lr
from flsplit.wire import Packet, load_weights, weights_of
from strategies.base import ServerHalf, SplitStrategy, register
from strategies.csl import CSLClient


class SplitFedV1Server(ServerHalf):
    """Trains client ``i``'s uploads on copy ``i`` of the top slice and returns ``dL/dz``."""

    replies_to_uploads = True

    def __init__(self, top: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig) -> None:
        super().__init__(top, optimizer, config)
        self.copies: dict[int, tuple[nn.Module, torch.optim.Optimizer]] = {}
        self._trained: set[int] = set()  # clients whose copy trained this round
        self._saved_optimizers: dict[int, dict] = {}  # from a checkpoint, applied on first use
        self._aggregator = build_aggregator(config.aggregation)

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        model, optimizer = self._copy(client_id)
        dz = self.train_batches(upload, keep_input_grad=True, model=self.entry(client_id, model), optimizer=optimizer)
        self._trained.add(client_id)
        return Packet.gradient(dz)

    def end_round(self, round_number: int, aggregated: dict[str, torch.Tensor] | None) -> None:
        trained = [(weights_of({"top": self.copies[c][0]}), self.partition_sizes[c]) for c in sorted(self._trained)]
        self._trained.clear()
        average = aggregate_weights(self._aggregator, round_number, trained)
        if average is None:
            return
        load_weights({"top": self.top}, average)
        for model, _ in self.copies.values():
            model.load_state_dict(self.top.state_dict())

    def top_copies(self) -> list[tuple[nn.Module, list[int]]]:
        return [(self.copies[c][0], [c]) for c in sorted(self._trained)]

    def load_averaged_top(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Every copy continues from the layer-wise average, which replaces ``end_round``'s own."""
        for model in [self.top, *(m for m, _ in self.copies.values())]:
            model.load_state_dict(dict(weights), strict=False)
        self._trained.clear()

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"copy_optimizers": {c: opt.state_dict() for c, (_, opt) in self.copies.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.copies.clear()
        self._saved_optimizers = dict(state["copy_optimizers"])

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        return super().scheduled_optimizers() + [optimizer for _, optimizer in self.copies.values()]

    def trained_state(self) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
        modules, optimizers = super().trained_state()
        return modules + [m for m, _ in self.copies.values()], optimizers + [o for _, o in self.copies.values()]

    def _copy(self, client_id: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Client ``client_id``'s copy: the current average at first use, with its own optimizer."""
        if client_id not in self.copies:
            model = copy.deepcopy(self.top)
            optimizer = build_optimizer(list(model.parameters()), self.config)
            set_lr(optimizer, self.optimizer.param_groups[0]["lr"])  # this round's scheduled rate
            if client_id in self._saved_optimizers:
                optimizer.load_state_dict(self._saved_optimizers.pop(client_id))
                host_optimizer_steps(optimizer)
            self.copies[client_id] = (model, optimizer)
        return self.copies[client_id]


@register
class SplitFedV1(SplitStrategy):
    """Split federated learning with a server-side copy per client."""

    name = "splitfed-v1"
    mixes_cuts = True
    uses_aux_head = False
    client_sync = "average"
    client_syncs = ("average",)
    sync_hint = 'its server keeps a top per client, so only averaged slices make sense; for one shared top run "csl"'
    client = CSLClient
    server = SplitFedV1Server
