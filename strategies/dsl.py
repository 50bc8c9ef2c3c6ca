"""Decoupled split learning: the client trains on an auxiliary loss; nothing comes back.

One upload carries the activations of as many batches as fit in the chunk bound, so the
number of messages per round does not grow with the number of batches. The client's loop is
shared by the rest of the local-loss family (``cse-fsl``, ``fsl-sage``), which change what a
local step does (``local_step``) and which batches go up (``uploads``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flsplit.privacy.defences import nopeek_loss
from flsplit.wire import Packet
from strategies.base import FLOAT32_BYTES, ClientHalf, ClientSlice, ServerHalf, SplitStrategy, register


class DSLClient(ClientHalf):
    """Steps the bottom slice and auxiliary head on the local loss right after each forward."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        assert client.aux is not None, f"{type(self).__name__} needs an auxiliary head"
        zs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        nbytes, aux_loss_sum, samples = 0, 0.0, 0
        client.bottom.train()
        client.aux.train()
        # FSL-SAGE's server asks for the round's first uploaded batch alone, to align on it.
        first_alone = bool(request.info.get("first_upload_alone"))
        while nbytes < max_bytes and not (first_alone and zs) and (batch := client.next_batch()) is not None:
            step, x, y = batch
            z, loss = self.local_step(client, x, y)
            aux_loss_sum += loss * len(y)
            samples += len(y)
            if self.uploads(client, step):
                zs.append(z.detach())
                ys.append(y)
                nbytes += z.numel() * FLOAT32_BYTES
        done = client.counters["step"] >= client.counters["round_end"]
        info = {
            "done": done,
            "batch_sizes": [len(y) for y in ys],
            "aux_loss_sum": aux_loss_sum,
            "local_samples": samples,
        }
        if not zs:
            return Packet(info=info)
        return Packet.upload(torch.cat(zs), torch.cat(ys), info)

    def local_step(self, client: ClientSlice, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One optimizer step on the local loss; returns the activations and the loss value."""
        assert client.aux is not None
        with client.watch.time("fwd"), client.placement.autocast():
            z = client.bottom(x)
            loss = F.cross_entropy(client.aux(z), y)
            penalty = nopeek_loss(self.config, x, z)  # NoPeek, if on (computed outside autocast)
        with client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)
            client.step(loss if penalty is None else loss + penalty)
        return z, loss.item()

    def uploads(self, client: ClientSlice, step: int) -> bool:
        """Whether batch ``step``'s activations go to the server (DSL: every batch)."""
        return True


class DSLServer(ServerHalf):
    """Trains the top slice on every batch it receives and sends nothing back."""

    replies_to_uploads = False

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        self.train_batches(upload, model=self.entry(client_id))
        return None


@register
class DSL(SplitStrategy):
    """Decoupled split learning with an auxiliary head (Zihad et al.)."""

    name = "dsl"
    mixes_cuts = True
    uses_aux_head = True
    serves_asynchronously = True
    client = DSLClient
    server = DSLServer
