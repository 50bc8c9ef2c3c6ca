"""FSL-SAGE (Nair et al., ICML 2025): clients step with an *estimated* server gradient.

Client: after each forward pass it backpropagates ``d CE(aux(z), y)/dz``, the auxiliary
model's estimate of the server's cut-layer gradient, into its slice; the server sends no
per-step gradient. Activations and labels of local iterations 0, q, 2q, ... of a round go up
(``upload-every``); the auxiliary model is not trained on the client.

Server: one step of the top slice per uploaded batch, and each client's uploads also enter
that client's alignment buffer, a FIFO of its newest ``align-buffer`` samples. At the start of
every ``align-every``-th round (rounds 1 + l, 1 + 2l, ...; round 1 has nothing buffered) the
server aligns its copy of each client's auxiliary model to the top slice's true gradients on
the buffer (see ``strategies.alignment``) and the aligned model goes down with that client's
first request of the round, counted in the ledger as ``bytes_down_aux_model``. The client
slices are averaged after every round; the auxiliary models stay per client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from statistics import fmean
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flsplit.config import RunConfig
from flsplit.models import build_head
from flsplit.split import build_halves
from flsplit.wire import Packet, TensorSpec, load_weights, weight_specs, weights_of
from strategies.alignment import agreement, align, true_gradients
from strategies.base import ClientSlice, ServerHalf, SplitStrategy, register
from strategies.dsl import DSLClient

ALIGN_METRICS = ("align_before_cosine", "align_before_mse", "align_after_cosine", "align_after_mse", "align_s")


class FSLSAGEClient(DSLClient):
    """Steps the bottom slice with the auxiliary model's gradient estimate; uploads every q-th batch."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        if "aux_model" in request.tensors:
            load_weights({"aux": client.aux}, request.tensors["aux_model"])
        return super().train(request, client, max_bytes)

    def download_specs(self, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        head = build_head(self.config.aux_head, activation_shape, self.config.num_classes)
        return weight_specs({"aux": head}, kind="aux_model")

    def local_step(self, client: ClientSlice, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        assert client.aux is not None
        with client.watch.time("fwd"):
            z = client.bottom(x)
            cut = z.detach().requires_grad_()
            loss = F.cross_entropy(client.aux(cut), y)
            (estimate,) = torch.autograd.grad(loss, cut)
        with client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)
            z.backward(estimate)
            client.optimizer.step()
        return z, loss.item()

    def uploads(self, client: ClientSlice, step: int) -> bool:
        return client.local_iteration(step) % self.config.upload_every == 0


@dataclass
class AlignmentBuffer:
    """The newest ``capacity`` uploaded samples of one client (activations and labels)."""

    capacity: int
    z: torch.Tensor | None = None
    y: torch.Tensor | None = None

    def push(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Append a batch, dropping the oldest samples beyond the capacity."""
        if self.z is not None and self.y is not None:
            z, y = torch.cat([self.z, z]), torch.cat([self.y, y])
        # Copies, so the buffer does not keep a whole upload's storage alive.
        self.z, self.y = z[-self.capacity :].clone(), y[-self.capacity :].clone()


class FSLSAGEServer(ServerHalf):
    """Trains the top slice on uploads, buffers them, and periodically aligns the estimators."""

    replies_to_uploads = False

    def __init__(self, top: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig) -> None:
        super().__init__(top, optimizer, config)
        self.estimators: dict[int, nn.Module] = {}  # the server's copy of each client's aux model
        self.buffers: dict[int, AlignmentBuffer] = {}
        self._outbox: dict[int, dict[str, torch.Tensor]] = {}
        self._report: dict[str, float | None] = dict.fromkeys(ALIGN_METRICS)

    def begin_round(self, round_number: int) -> None:
        self._outbox.clear()
        if round_number == 1 or (round_number - 1) % self.config.align_every:
            return
        started = time.perf_counter()
        before, after = [], []
        batch = self.config.batch_size
        for client_id, buffer in sorted(self.buffers.items()):
            z, y = buffer.z, buffer.y
            assert z is not None and y is not None  # a buffer exists once something was pushed
            estimator = self._estimator(client_id)
            with self.watch.time("server"):
                target = true_gradients(self.top, z, y, batch)
                before.append(agreement(estimator, z, y, target, batch))
                align(estimator, z, y, target, self.config.align_epochs, self.config.align_lr, batch)
                after.append(agreement(estimator, z, y, target, batch))
            self._outbox[client_id] = {k: v.detach().clone() for k, v in weights_of({"aux": estimator}).items()}
        if before:
            self._report = {
                "align_before_cosine": fmean(a.cosine for a in before),
                "align_before_mse": fmean(a.mse for a in before),
                "align_after_cosine": fmean(a.cosine for a in after),
                "align_after_mse": fmean(a.mse for a in after),
                "align_s": time.perf_counter() - started,
            }

    def request(self, client_id: int) -> Packet:
        aligned = self._outbox.pop(client_id, None)
        return Packet({"aux_model": aligned}) if aligned is not None else Packet()

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        self.train_batches(upload)
        buffer = self.buffers.setdefault(client_id, AlignmentBuffer(self.config.align_buffer))
        buffer.push(upload.tensors["activations"]["z"], upload.tensors["labels"]["y"])
        return None

    def take_metrics(self) -> dict[str, float | None]:
        """The top slice's training metrics, and the round's alignment (``None`` if none ran)."""
        out = super().take_metrics() | self._report
        self._report = dict.fromkeys(ALIGN_METRICS)
        return out

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {
            "estimators": {cid: m.state_dict() for cid, m in self.estimators.items()},
            "buffers": {cid: (b.z, b.y) for cid, b in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for client_id, weights in state["estimators"].items():
            self._estimator(client_id).load_state_dict(weights)
        for client_id, (z, y) in state["buffers"].items():
            self.buffers[client_id] = AlignmentBuffer(self.config.align_buffer, z, y)

    def trained_state(self) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
        modules, optimizers = super().trained_state()
        return modules + list(self.estimators.values()), optimizers

    def _estimator(self, client_id: int) -> nn.Module:
        """The client's auxiliary model as the server last aligned it (the seeded head at first)."""
        if client_id not in self.estimators:
            self.estimators[client_id] = build_halves(self.config)[2]
        return self.estimators[client_id]


@register
class FSLSAGE(SplitStrategy):
    """Federated split learning via smashed-activation gradient estimation."""

    name = "fsl-sage"
    uses_aux_head = True
    always_aggregates = True
    aggregated_modules = ("bottom",)
    client = FSLSAGEClient
    server = FSLSAGEServer
