"""Hybrid split learning (the DSL paper's Section III-C): the client minimises α·L_aux + λ·L.

Every batch's activations go up and train the top slice, as in DSL. Most batches update the
client on the auxiliary loss alone, right after their forward pass. Every ``hybrid-k``-th
batch of a round (local iterations k-1, 2k-1, ...) instead waits for the server's gradient
``dL/dz`` and updates on ``α·dL_aux + λ·dL`` (α = ``hybrid-aux-weight``, λ = ``hybrid-lambda``).
Such a batch ends its upload, and the server's reply carries the gradient of that batch only.

Limits, both tested: λ = 0 never asks for a gradient and is DSL, weight for weight; k = 1 with
α = 0 and λ = 1 asks for every batch's gradient and is CSL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from flsplit.config import RunConfig, StrategyParams
from flsplit.privacy.defences import backward_at_cut, nopeek_loss
from flsplit.wire import Packet, PayloadError, TensorSpec, gradient_specs
from strategies.base import (
    FLOAT32_BYTES,
    ClientHalf,
    ClientSlice,
    ServerHalf,
    SplitStrategy,
    batch_sizes,
    register,
)
from strategies.csl import hold_pending, pending_batch, pending_input

WANTS_GRADIENT = "gradient_for_last"  # info flag: reply with dL/dz of the upload's last batch


class HybridClient(ClientHalf):
    """DSL's local steps, plus a combined step with the server's gradient every k-th batch."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        assert client.aux is not None, "hybrid needs an auxiliary head"
        nbytes, aux_loss_sum, samples, waits = 0, 0.0, 0, False
        if "gradients" in request.tensors:
            loss, count = self._apply_gradient(client, request.gradients)
            aux_loss_sum, samples = loss * count, count
        zs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        client.bottom.train()
        client.aux.train()
        while not waits and nbytes < max_bytes and (batch := client.next_batch()) is not None:
            step, x, y = batch
            waits = self._wants_gradient(client, step)
            if waits:
                with client.watch.time("fwd"), client.placement.autocast():
                    z = client.bottom(x)
                hold_pending(client, step, z, y)
            else:
                z, loss = self._local_step(client, x, y)
                aux_loss_sum += loss * len(y)
                samples += len(y)
            zs.append(z.detach())
            ys.append(y)
            nbytes += z.numel() * FLOAT32_BYTES
        done = not waits and client.counters["step"] >= client.counters["round_end"]
        info = {
            "done": done,
            "batch_sizes": [len(y) for y in ys],
            "aux_loss_sum": aux_loss_sum,
            "local_samples": samples,
            WANTS_GRADIENT: waits,
        }
        if not zs:
            return Packet(info=info)
        return Packet.upload(torch.cat(zs), torch.cat(ys), info)

    def download_specs(self, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        return gradient_specs(activation_shape)

    def _wants_gradient(self, client: ClientSlice, step: int) -> bool:
        k = self.config.params.hybrid_k
        return self.config.params.hybrid_lambda > 0 and client.local_iteration(step) % k == k - 1

    def _local_step(self, client: ClientSlice, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """α·L_aux alone (DSL's step; no update at all when α = 0)."""
        assert client.aux is not None
        weight = self.config.params.hybrid_aux_weight
        if not weight and not self.config.nopeek_weight:
            with client.watch.time("fwd"), torch.no_grad(), client.placement.autocast():
                return client.bottom(x), 0.0
        with client.watch.time("fwd"), client.placement.autocast():
            z = client.bottom(x)
            loss = F.cross_entropy(client.aux(z), y) if weight else torch.zeros((), device=z.device)
            penalty = nopeek_loss(self.config, x, z)
        with client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)
            client.step(weight * loss if penalty is None else weight * loss + penalty)
        return z, loss.item()

    def _apply_gradient(self, client: ClientSlice, dz: torch.Tensor) -> tuple[float, int]:
        """α·L_aux + λ·L on the pending batch, whose gradient ``dz`` the server just sent.

        Returns the batch's auxiliary loss (0 when α = 0) and its size.
        """
        assert client.aux is not None
        weight, lam = self.config.params.hybrid_aux_weight, self.config.params.hybrid_lambda
        with pending_batch(client, dz) as (z, y), client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)
            scale = client.scaler.scale  # fp16 on CUDA: both terms scaled alike (see csl.py)
            x = pending_input(client, self.config)
            if not weight:
                backward_at_cut(self.config, client.scaler, x, z, scale(lam * dz))
                client.step()
                return 0.0, len(y)
            with client.placement.autocast():
                loss = F.cross_entropy(client.aux(z), y)
            penalty = None if x is None else nopeek_loss(self.config, x, z)
            local = weight * loss if penalty is None else weight * loss + penalty
            torch.autograd.backward([scale(local), z], [None, scale(lam * dz)])
            client.step()
        return loss.item(), len(y)


class HybridServer(ServerHalf):
    """Trains the top slice on every batch; returns ``dL/dz`` of a batch when the client asks."""

    def __init__(self, top: torch.nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig) -> None:
        super().__init__(top, optimizer, config)
        # With λ = 0 no request depends on an upload, so requests are pipelined as in DSL.
        self.replies_to_uploads = config.params.hybrid_lambda > 0

    def check_upload(self, upload: Packet) -> None:
        super().check_upload(upload)
        wants = upload.info.get(WANTS_GRADIENT, False)
        if not isinstance(wants, bool) or (wants and not upload.tensors):
            raise PayloadError(f"info.{WANTS_GRADIENT}: {wants!r} must be a boolean, and true only with activations")

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        dz = self.train_batches(upload, keep_input_grad=bool(upload.info.get(WANTS_GRADIENT)), model=self.entry(client_id))
        if dz is None:
            return None
        last = batch_sizes(upload, len(dz), self.config.batch_size)[-1]
        return Packet.gradient(dz[-last:])


class HybridParams(StrategyParams):
    """The hybrid's weights: ``alpha * L_aux + lambda * L``, the server's gradient every k-th batch."""

    hybrid_lambda: float = Field(0.1, ge=0)  # lambda, the weight of the server's loss
    hybrid_k: int = Field(5, ge=1)  # the server's gradient comes for batches k-1, 2k-1, ...
    hybrid_aux_weight: float = Field(1.0, ge=0)  # alpha, the weight of the auxiliary loss

    @model_validator(mode="after")
    def _client_has_a_loss(self) -> HybridParams:
        if self.hybrid_aux_weight == 0 and self.hybrid_lambda == 0:
            raise ValueError(
                "hybrid-aux-weight: with hybrid-lambda = 0 too, the hybrid client has no loss to train on; "
                "set hybrid-aux-weight > 0 (DSL-like) or hybrid-lambda > 0 (CSL-like)"
            )
        return self


@register
class Hybrid(SplitStrategy):
    """DSL with a weighted, periodic server gradient (λ, k)."""

    name = "hybrid"
    mixes_cuts = True
    uses_aux_head = True
    params = HybridParams
    client = HybridClient
    server = HybridServer
