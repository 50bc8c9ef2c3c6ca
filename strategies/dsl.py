"""Decoupled split learning: the client trains on an auxiliary loss; nothing comes back.

One upload carries the activations of as many batches as fit in the chunk bound, so the
number of messages per round does not grow with the number of batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flsplit.wire import Packet
from strategies.base import ClientHalf, ClientSlice, ServerHalf, SplitStrategy, register


class DSLClient(ClientHalf):
    """Steps the bottom slice and auxiliary head on the local loss right after each forward."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        assert client.aux is not None, "DSL needs an auxiliary head"
        zs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        nbytes, aux_loss_sum = 0, 0.0
        client.bottom.train()
        client.aux.train()
        while nbytes < max_bytes and (batch := client.next_batch()) is not None:
            _, x, y = batch
            with client.watch.time("fwd"):
                z = client.bottom(x)
                loss = F.cross_entropy(client.aux(z), y)
            with client.watch.time("bwd"):
                client.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                client.optimizer.step()
            zs.append(z.detach())
            ys.append(y)
            nbytes += z.numel() * z.element_size()
            aux_loss_sum += loss.item() * len(y)
        done = client.counters["step"] >= client.counters["round_end"]
        info = {"done": done, "batch_sizes": [len(y) for y in ys], "aux_loss_sum": aux_loss_sum}
        if not zs:
            return Packet(info=info)
        return Packet({"activations": {"z": torch.cat(zs)}, "labels": {"y": torch.cat(ys)}}, info)


class DSLServer(ServerHalf):
    """Trains the top slice on every batch it receives and sends nothing back."""

    replies_to_uploads = False

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        self.train_batches(upload)
        return None


@register
class DSL(SplitStrategy):
    """Decoupled split learning with an auxiliary head (Zihad et al.)."""

    name = "dsl"
    uses_aux_head = True
    client = DSLClient
    server = DSLServer
