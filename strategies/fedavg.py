"""FedAvg (McMahan et al., 2017) as the baseline: the whole network trains on every client.

The client holds the whole ResNet: its bottom slice plus, as its second module, the rest of
the network (the part that split strategies leave on the server). It trains both on its
round's batches with plain cross-entropy and uploads no activations. After each round both
modules go up, are averaged by Flower's strategy (``flwr.serverapp.strategy.FedAvg``, or the
one named by ``aggregation``) and come back down, all counted in the ledger as model sync.
The server adopts the averaged upper part as its top slice, so evaluation runs the averaged
whole network through the same path, test subset and ledger as the split strategies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flsplit.config import RunConfig
from flsplit.split import build_halves
from flsplit.wire import Packet, PayloadError, load_weights
from strategies.base import ClientHalf, ClientSlice, ServerHalf, SplitStrategy, register


class FedAvgClient(ClientHalf):
    """Trains the whole network on all of this round's batches in one message."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        assert client.aux is not None, "fedavg's client holds the upper part of the network as 'aux'"
        loss_sum, samples = 0.0, 0
        client.bottom.train()
        client.aux.train()
        while (batch := client.next_batch()) is not None:
            _, x, y = batch
            with client.watch.time("fwd"), client.placement.autocast():
                loss = F.cross_entropy(client.aux(client.bottom(x)), y)
            with client.watch.time("bwd"):
                client.optimizer.zero_grad(set_to_none=True)
                client.step(loss)
            loss_sum += loss.item() * len(y)
            samples += len(y)
        return Packet(info={"done": True, "aux_loss_sum": loss_sum, "local_samples": samples})


class FedAvgServer(ServerHalf):
    """Trains nothing; takes the averaged upper part of the network as its top slice."""

    replies_to_uploads = False

    def check_upload(self, upload: Packet) -> None:
        if upload.tensors:
            raise PayloadError("fedavg: a training upload carries no tensors, but this one has " + ", ".join(upload.tensors))

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        return None  # never called: uploads without tensors are not passed on

    def end_round(self, round_number: int, aggregated: dict[str, torch.Tensor] | None) -> None:
        if aggregated is not None:
            load_weights({"aux": self.top}, aggregated)

    def take_metrics(self) -> dict[str, float]:
        """No server-side training: see ``aux_train_loss`` for the clients' loss."""
        return {"train_loss": float("nan"), "train_accuracy": float("nan")}


@register
class FedAvg(SplitStrategy):
    """Federated averaging of the whole network: no split."""

    name = "fedavg"
    uses_aux_head = True
    client_sync = "average"
    client_syncs = ("average",)
    sync_hint = "federated averaging is its sync; for a run on one client set clients = 1"
    uploads_activations = False
    client = FedAvgClient
    server = FedAvgServer

    @classmethod
    def client_modules(cls, config: RunConfig) -> dict[str, nn.Module]:
        bottom, top, _ = build_halves(config)
        return {"bottom": bottom, "aux": top}
