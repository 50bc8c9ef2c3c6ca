"""Conventional split learning: the server sends ``dL/dz`` back for every batch.

One request carries the gradient for the client's previous batch and asks for the next
batch's activations, so a batch costs one round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from flsplit.config import ConfigError, RunConfig
from flsplit.privacy.defences import backward_at_cut
from flsplit.wire import Packet, PayloadError, TensorSpec, gradient_specs
from strategies.base import ClientHalf, ClientSlice, ServerHalf, SplitStrategy, register


class CSLClient(ClientHalf):
    """Backpropagates the server's gradient through the bottom slice, then sends the next batch."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        if "gradients" in request.tensors:
            self._apply_gradient(client, request.gradients)
        batch = client.next_batch()
        if batch is None:
            return Packet(info={"done": True})
        step, x, y = batch
        client.bottom.train()
        with client.watch.time("fwd"), client.placement.autocast():
            z = client.bottom(x)
        hold_pending(client, step, z, y)
        return Packet.upload(z.detach(), y, {"batch_sizes": [len(y)], "done": False})

    def download_specs(self, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        return gradient_specs(activation_shape)

    def _apply_gradient(self, client: ClientSlice, dz: torch.Tensor) -> None:
        with pending_batch(client, dz) as (z, _), client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)
            # fp16: the server's gradient is scaled like a loss, as its small values would
            # underflow in the half-precision backward pass; the scaler unscales before the step.
            backward_at_cut(self.config, client.scaler, pending_input(client, self.config), z, client.scaler.scale(dz))
            client.step()


def hold_pending(client: ClientSlice, step: int, z: torch.Tensor, y: torch.Tensor) -> None:
    """Keep batch ``step`` (and, in this process, its graph) until the server's gradient comes."""
    client.live["pending"] = (step, z, y)
    client.counters["pending"] = step


def pending_input(client: ClientSlice, config: RunConfig) -> torch.Tensor | None:
    """The pending batch's input ``x``, which NoPeek needs (``None`` while it is off): the batch
    is a pure function of its step, so it is read again rather than held between messages."""
    return client.batch(client.counters["pending"])[0] if config.nopeek_weight else None


@contextmanager
def pending_batch(client: ClientSlice, dz: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The pending batch's activations (with their graph) and labels, for a backward with ``dz``.

    In a process that did not run the batch's forward pass the graph is rebuilt: the persisted
    weights are those the forward pass used, and the batch is a pure function of its step, so
    the forward is recomputed exactly. BatchNorm's running statistics, which the original
    forward already updated, are restored afterwards.
    """
    pending = client.counters.get("pending", -1)
    if pending < 0:
        raise PayloadError("gradients.dz: received a gradient but no batch is pending")
    live = client.live.pop("pending", None)
    running_stats = None
    if live is not None and live[0] == pending:
        _, z, y = live
    else:
        x, y = client.batch(pending)
        running_stats = {name: b.clone() for name, b in client.bottom.named_buffers()}
        client.bottom.train()
        with client.watch.time("fwd"), client.placement.autocast():
            z = client.bottom(x)
    if dz.shape != z.shape:
        raise PayloadError(f"gradients.dz: shape {list(dz.shape)}, expected {list(z.shape)}")
    yield z, y
    if running_stats is not None:
        with torch.no_grad():
            for name, buffer in client.bottom.named_buffers():
                buffer.copy_(running_stats[name])
    client.counters["pending"] = -1


class CSLServer(ServerHalf):
    """Trains the top slice on each batch and returns the gradient of its input."""

    replies_to_uploads = True

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        dz = self.train_batches(upload, keep_input_grad=True, model=self.entry(client_id))
        return Packet.gradient(dz)


@register
class CSL(SplitStrategy):
    """Split learning with one shared top slice and, per ``client-sync``, the client slices kept
    apart (``none``, the default: parallel split learning), handed from client to client
    (``relay``: vanilla split learning, Gupta and Raskar, 2018; Thapa et al.'s SL baseline) or
    averaged (``average``, interleaved; served sequentially that is ``splitfed-v2``)."""

    name = "csl"
    mixes_cuts = True
    uses_aux_head = False
    client = CSLClient
    server = CSLServer

    @classmethod
    def sync_of(cls, config: RunConfig) -> str:
        sync = super().sync_of(config)
        if cls is CSL and sync == "average" and cls.serves_sequentially(config):
            raise ConfigError(
                f"invalid run config:\n  - client-sync: csl with client-sync = \"average\" served {cls.order_of(config)} "
                f"is splitfed-v2; run strategy = \"splitfed-v2\" (serve-order = \"{cls.order_of(config)}\") so the "
                "comparison has one row for it"
            )
        return sync
