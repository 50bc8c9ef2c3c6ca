"""FSL-SAGE (Nair et al., ICML 2025): clients step with an *estimated* server gradient.

Client: after each forward pass it backpropagates ``d CE(aux(z), y)/dz``, the auxiliary
model's estimate of the server's cut-layer gradient, into its slice; the server sends no
per-step gradient. Activations and labels of local iterations 0, q, 2q, ... of a round go up
(``upload-every``); the auxiliary model is not trained on the client.

Server: one step of the top slice per uploaded batch, and each client's uploads also enter
that client's alignment buffer, a FIFO of its newest ``align-buffer`` samples. Alignment
follows the reference's schedule: in rounds 1, 1 + l, 1 + 2l, ... (``align-every`` = l; the
reference's t = 0, l, 2l, ...) the server asks each client for its first uploaded batch alone,
buffers it, aligns its copy of that client's auxiliary model to the top slice's true gradients
on the buffer (see ``strategies.alignment``) and sends the aligned model back before the
client goes on, so the estimator is aligned from the first round on. The aligned model counts
in the ledger as ``bytes_down_aux_model``. Each estimator keeps one Adam state (``align-lr``)
across alignments, checkpointed with it. The client slices are averaged after every round;
the auxiliary models stay per client.

The alignment's cosines (``align_before``/``align_after``) are in sample, on the buffer the
estimator is fitted to; ``held_out_cosine`` scores each estimator on the client's first upload
of every later round, before it is trained on or buffered: out of sample, and as stale as the
estimator is by then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from statistics import fmean
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from flsplit.config import RunConfig
from flsplit.device import host_optimizer_steps
from flsplit.memory import unmeasured
from flsplit.privacy.defences import backward_at_cut
from flsplit.split import build_aux, build_halves
from flsplit.wire import Packet, TensorSpec, load_weights, module_state, weight_specs, weights_of
from strategies.alignment import Agreement, agreement, align, true_gradients
from strategies.base import ClientSlice, ServerHalf, SplitStrategy, register
from strategies.cse_fsl import UploadEvery
from strategies.dsl import DSLClient

ALIGN_METRICS = ("align_index", "align_before_cosine", "align_before_mse", "align_after_cosine", "align_after_mse", "align_s")
#: The estimators scored out of sample: on each client's first upload of a round, before the
#: server trains on it or buffers it, so on samples the last alignment never saw.
HELD_OUT_METRICS = ("held_out_cosine", "held_out_mse")


class FSLSAGEClient(DSLClient):
    """Steps the bottom slice with the auxiliary model's gradient estimate; uploads every q-th batch."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        if "aux_model" in request.tensors:
            load_weights({"aux": client.aux}, request.tensors["aux_model"])
        return super().train(request, client, max_bytes)

    def download_specs(self, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        return list(_aux_model_specs(self.config))

    def local_step(self, client: ClientSlice, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        assert client.aux is not None
        with client.watch.time("fwd"), client.placement.autocast():
            z = client.bottom(x)
            cut = z.detach().requires_grad_()
            loss = F.cross_entropy(client.aux(cut), y)
            # fp16 on CUDA: the estimate of a scaled loss is scaled, and the scaler unscales the step.
            (estimate,) = torch.autograd.grad(client.scaler.scale(loss), cut)
        with client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)
            backward_at_cut(self.config, client.scaler, x, z, estimate)
            client.step()
        return z, loss.item()

    def uploads(self, client: ClientSlice, step: int) -> bool:
        return client.local_iteration(step) % self.config.params.upload_every == 0


@lru_cache(maxsize=4)
def _reference_aux(config: RunConfig) -> nn.Module:
    """A freshly built auxiliary model, once per config, read only: what an aligned model sent
    down is checked against and sized by."""
    with torch.random.fork_rng(devices=[]):
        return build_aux(config)


@lru_cache(maxsize=4)
def _aux_model_specs(config: RunConfig) -> tuple[TensorSpec, ...]:
    """What an aligned auxiliary model sent down must look like."""
    return tuple(weight_specs({"aux": _reference_aux(config)}, kind="aux_model"))


@lru_cache(maxsize=4)
def _estimator_size(config: RunConfig) -> tuple[int, int]:
    """The auxiliary model's trainable parameters, and the tensor bytes of one aligned model sent
    down (parameters and BatchNorm statistics in their own dtypes; the ledger adds headers)."""
    aux = _reference_aux(config)
    params = sum(p.numel() for p in aux.parameters())
    return params, sum(v.numel() * v.element_size() for v in module_state(aux).values())


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
        self.align_optimizers: dict[int, torch.optim.Optimizer] = {}  # one Adam per estimator
        self.buffers: dict[int, AlignmentBuffer] = {}
        self._outbox: dict[int, dict[str, torch.Tensor]] = {}
        self._aligned: set[int] | None = None  # clients aligned this round; None: no alignment round
        self._agreements: list[tuple[Agreement, Agreement]] = []
        self._align_s = 0.0
        self._report: dict[str, float | None] = dict.fromkeys(ALIGN_METRICS)
        self._held_out: dict[int, Agreement] = {}  # this round's out-of-sample score per client

    def begin_round(self, round_number: int) -> None:
        aligns = (round_number - 1) % self.config.params.align_every == 0
        self._aligned = set() if aligns else None
        self._agreements, self._align_s = [], 0.0
        self._held_out = {}

    def request(self, client_id: int) -> Packet:
        aligned = self._outbox.pop(client_id, None)
        if aligned is not None:
            return Packet({"aux_model": aligned})
        if self._must_align(client_id):
            return Packet(info={"first_upload_alone": True})  # align on it before going on
        return Packet()

    def awaits_reply(self, client_id: int) -> bool:
        """In an alignment round the client waits for its aligned model after its first upload."""
        return self._must_align(client_id)

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        aligned_now = self._aligned is not None and client_id in self._aligned
        if client_id in self.estimators and client_id not in self._held_out and not aligned_now:
            self._score_held_out(client_id, upload)
        self.train_batches(upload)
        buffer = self.buffers.setdefault(client_id, AlignmentBuffer(self.config.params.align_buffer))
        buffer.push(upload.activations, upload.labels)
        if not self._must_align(client_id):
            return None
        aligned = self._align(client_id, buffer)
        if upload.info.get("done"):  # nothing more this round: the model goes with the next request
            self._outbox[client_id] = aligned
            return None
        return Packet({"aux_model": aligned})

    def end_round(self, round_number: int, aggregated: dict[str, torch.Tensor] | None) -> None:
        if self._agreements:
            before, after = zip(*self._agreements)
            self._report = {
                "align_index": (round_number - 1) // self.config.params.align_every + 1,  # 1st, 2nd, ... alignment
                "align_before_cosine": fmean(a.cosine for a in before),
                "align_before_mse": fmean(a.mse for a in before),
                "align_after_cosine": fmean(a.cosine for a in after),
                "align_after_mse": fmean(a.mse for a in after),
                "align_s": self._align_s,
            }

    def _score_held_out(self, client_id: int, upload: Packet) -> None:
        """The estimator against the top's true gradients on an upload it was not aligned on."""
        batch = self.config.batch_size
        with self.watch.time("server"), unmeasured():
            target = true_gradients(self.top, upload.activations, upload.labels, batch)
            self._held_out[client_id] = agreement(self.estimators[client_id], upload.activations, upload.labels, target, batch)

    def _must_align(self, client_id: int) -> bool:
        return self._aligned is not None and client_id not in self._aligned

    def _align(self, client_id: int, buffer: AlignmentBuffer) -> dict[str, torch.Tensor]:
        """Align the client's estimator on its buffer; return the aligned weights to send."""
        assert self._aligned is not None and buffer.z is not None and buffer.y is not None
        self._aligned.add(client_id)
        started, batch = time.perf_counter(), self.config.batch_size
        estimator = self._estimator(client_id)
        # Sampling the heap after each of the alignment's many small operations would cost more
        # than the alignment: the server's memory probe leaves it out (flsplit.memory).
        with self.watch.time("server"), unmeasured():
            target = true_gradients(self.top, buffer.z, buffer.y, batch)
            before = agreement(estimator, buffer.z, buffer.y, target, batch)
            align(estimator, self.align_optimizers[client_id], buffer.z, buffer.y, target, self.config.params.align_epochs, batch)
            self._agreements.append((before, agreement(estimator, buffer.z, buffer.y, target, batch)))
        self._align_s += time.perf_counter() - started
        return {k: v.detach().clone() for k, v in weights_of({"aux": estimator}).items()}

    def take_metrics(self) -> dict[str, float | None]:
        """The top slice's training metrics, the estimator's size, and the round's alignment
        (``None`` if none ran)."""
        params, size = _estimator_size(self.config)
        held_out = dict.fromkeys(HELD_OUT_METRICS)
        if self._held_out:
            held_out = {
                "held_out_cosine": fmean(a.cosine for a in self._held_out.values()),
                "held_out_mse": fmean(a.mse for a in self._held_out.values()),
            }
        out = super().take_metrics() | {"estimator_params": params, "estimator_bytes": size} | self._report | held_out
        self._report = dict.fromkeys(ALIGN_METRICS)
        return out

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {
            "estimators": {cid: m.state_dict() for cid, m in self.estimators.items()},
            "align_optimizers": {cid: o.state_dict() for cid, o in self.align_optimizers.items()},
            "outbox": dict(self._outbox),
            "buffers": {cid: (b.z, b.y) for cid, b in self.buffers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for client_id, weights in state["estimators"].items():
            self._estimator(client_id).load_state_dict(weights)
            self.align_optimizers[client_id].load_state_dict(state["align_optimizers"][client_id])
            host_optimizer_steps(self.align_optimizers[client_id])
        self._outbox = dict(state["outbox"])
        for client_id, (z, y) in state["buffers"].items():
            self.buffers[client_id] = AlignmentBuffer(self.config.params.align_buffer, z, y)

    def trained_state(self) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
        modules, optimizers = super().trained_state()
        return modules + list(self.estimators.values()), optimizers + list(self.align_optimizers.values())

    def _estimator(self, client_id: int) -> nn.Module:
        """The client's auxiliary model as the server last aligned it (the seeded head at first)."""
        if client_id not in self.estimators:
            estimator = build_halves(self.config)[2].to(self.placement.device)
            self.estimators[client_id] = estimator
            self.align_optimizers[client_id] = torch.optim.Adam(estimator.parameters(), lr=self.config.params.align_lr)
        return self.estimators[client_id]


class FSLSAGEParams(UploadEvery):
    """FSL-SAGE's settings: the upload interval q and the alignment's schedule and budget."""

    align_every: int = Field(10, ge=1)  # l: align in rounds 1, 1 + l, 1 + 2l, ...
    align_buffer: int = Field(1000, ge=1)  # samples in each client's FIFO alignment buffer
    align_epochs: int = Field(100, ge=1)  # Adam steps of one alignment (one per pass over the buffer)
    align_lr: float = Field(1e-3, gt=0)  # rate of each estimator's Adam


@register
class FSLSAGE(SplitStrategy):
    """Federated split learning via smashed-activation gradient estimation."""

    name = "fsl-sage"
    uses_aux_head = True
    client_sync = "average"
    aggregated_modules = ("bottom",)
    params = FSLSAGEParams
    client = FSLSAGEClient
    server = FSLSAGEServer
