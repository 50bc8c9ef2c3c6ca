"""U-shaped split learning: the client holds the bottom slice and the head, so no label leaves it.

The network is cut twice: the client keeps the blocks up to ``cut`` (the bottom) and those
after ``head-cut`` (the head: by default the classifier, i.e. global pooling and the linear
layer of a CIFAR ResNet) with the loss; the server keeps the middle. Per batch:

- ``csl-u``: ``z1`` up, ``z2`` down, ``dL/dz2`` up, ``dL/dz1`` down. Every slice gets the exact
  gradient of the loss, so one client's training equals training the whole network.
- ``dsl-u``: the bottom trains on the auxiliary loss at the cut, as ``dsl``'s does; ``z1`` up,
  ``z2`` down, ``dL/dz2`` up, and nothing comes back for the bottom. The client still waits
  for ``z2`` every batch: it decouples the gradients, not the latency. The next request goes
  out before the middle trains on ``dL/dz2`` (pipelined), so that step overlaps the client's.

A client's uploads alternate between ``z1`` and ``dL/dz2``, and its requests between ``z2``
and ``dL/dz1``, so the halves say per exchange what the next one must carry
(``ServerHalf.upload_specs_of``, ``ClientHalf.request_specs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from flsplit.config import RunConfig, StrategyParams
from flsplit.privacy.defences import nopeek_loss
from flsplit.privacy.gradient_record import GradientRecorder
from flsplit.split import build_u_slices, head_input_shape, resolve_head_cut
from flsplit.wire import Packet, PayloadError, TensorSpec, gradient_specs
from strategies.base import ClientSlice, ServerHalf, SplitStrategy, batch_sizes, register, unscaled
from strategies.csl import CSLClient, hold_pending

#: What a U-shaped client waits for next (``counters["awaits"]``): a request to train its next
#: batch, the middle's ``z2`` for its head, or (``csl-u``) ``dL/dz1`` for its bottom.
AWAITS_STEP, AWAITS_Z2, AWAITS_DZ1 = 0, 1, 2


class UShapedParams(StrategyParams):
    """Where the server's middle ends, and how much of the ``dL/dz2`` it receives it records."""

    head_cut: str = ""  # the last block the middle holds; the client's head is the rest (empty: the classifier)
    #: Batches of ``dL/dz2`` recorded per client in each round ``keep-rounds`` keeps, for
    #: ``flsplit leak`` (``flsplit.privacy.gradient_record``); 0 records none.
    record_gradient_batches: int = Field(4, ge=0)

    @field_validator("head_cut", mode="before")
    @classmethod
    def _index_as_text(cls, value: Any) -> Any:
        """``head-cut = 8`` (a TOML integer) names block 8, as ``cut = 3`` does."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def head_cut_of(config: RunConfig) -> int:
    """This run's ``head-cut`` as the index of the server's last block (``flsplit.split``)."""
    return resolve_head_cut(getattr(config.params, "head_cut", ""), config)


def z2_specs(config: RunConfig, kind: str) -> list[TensorSpec]:
    """What a tensor shaped like ``z2`` (``activations`` down, or ``gradients`` up) must look like."""
    shape = head_input_shape(config, head_cut_of(config))
    return gradient_specs(shape) if kind == "gradients" else [TensorSpec("activations", "z", torch.float32, (None, *shape))]


class USplitClient(CSLClient):
    """Sends ``z1``, runs the head and the loss on the ``z2`` that comes back, returns ``dL/dz2``."""

    #: What the client waits for after sending ``dL/dz2``.
    after_head: int = AWAITS_DZ1

    def request_specs(self, client: ClientSlice, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        awaits = client.counters.get("awaits", AWAITS_STEP)
        if awaits == AWAITS_Z2:
            return self.head_input_specs()
        return gradient_specs(activation_shape) if awaits == AWAITS_DZ1 else []

    def head_input_specs(self) -> list[TensorSpec]:
        """What a ``z2`` sent down for the head must look like (training and evaluation)."""
        return z2_specs(self.config, "activations")

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        # A bare request asks for the next batch whatever was pending (a new round after a
        # round the server dropped this client from mid-batch).
        awaits = client.counters.get("awaits", AWAITS_STEP) if request.tensors else AWAITS_STEP
        if awaits == AWAITS_Z2:
            return self.train_head(request.activations, client)
        if awaits == AWAITS_DZ1:
            self._apply_gradient(client, request.gradients)
        batch = client.next_batch()
        if batch is None:
            return Packet(info={"done": True})
        step, x, y = batch
        z1, info = self.bottom_forward(client, step, x, y)
        client.counters["awaits"] = AWAITS_Z2
        return Packet({"activations": {"z": z1.detach()}}, {"batch_sizes": [len(y)], "local_samples": len(y), "done": False} | info)

    def bottom_forward(self, client: ClientSlice, step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``z1`` for batch ``step``, held (with its graph) until ``dL/dz1`` comes; extra upload info."""
        client.bottom.train()
        with client.watch.time("fwd"), client.placement.autocast():
            z1 = client.bottom(x)
        hold_pending(client, step, z1, y)
        return z1, {}

    def train_head(self, z2: torch.Tensor, client: ClientSlice) -> Packet:
        """One step of the head on the pending batch's labels; the upload carries ``dL/dz2``."""
        assert client.head is not None, f"{type(self).__name__} needs the head (ClientSlice.head)"
        y = pending_labels(client)
        if len(z2) != len(y):
            raise PayloadError(f"activations.z: {len(z2)} rows for a pending batch of {len(y)}")
        z2 = z2.detach().requires_grad_()
        client.head.train()
        with client.watch.time("fwd"), client.placement.autocast():
            logits = client.head(z2)
            loss = F.cross_entropy(logits, y)
        with client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)  # only the head has gradients: only it steps
            scale = client.scaler.get_scale() if client.scaler.is_enabled() else 1.0
            client.step(loss)
        client.counters["awaits"] = self.after_head
        info = {
            "done": False,
            "batch_sizes": [len(y)],
            "local_samples": 0,  # counted with z1
            "head_loss_sum": loss.item() * len(y),
            "head_correct": int((logits.argmax(1) == y).sum()),
        }
        return Packet.gradient(unscaled(z2.grad, scale), info)


class DSLUClient(USplitClient):
    """Steps the bottom and auxiliary head on the local loss, then sends ``z1``; only the head waits."""

    after_head = AWAITS_STEP

    def bottom_forward(self, client: ClientSlice, step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        assert client.aux is not None, f"{type(self).__name__} needs an auxiliary head"
        client.bottom.train()
        client.aux.train()
        with client.watch.time("fwd"), client.placement.autocast():
            z1 = client.bottom(x)
            loss = F.cross_entropy(client.aux(z1), y)
            penalty = nopeek_loss(self.config, x, z1)  # NoPeek, if on (computed outside autocast)
        with client.watch.time("bwd"):
            client.optimizer.zero_grad(set_to_none=True)
            client.step(loss if penalty is None else loss + penalty)
        hold_pending(client, step, z1.detach(), y)  # for the labels only: no gradient comes back
        return z1, {"aux_loss_sum": loss.item() * len(y)}


def pending_labels(client: ClientSlice) -> torch.Tensor:
    """The labels of the batch whose ``z1`` went up (rebuilt from its step in another process)."""
    step = client.counters.get("pending", -1)
    if step < 0:
        raise PayloadError("activations.z: received z2 but no batch is pending")
    live = client.live.get("pending")
    if live is not None and live[0] == step:
        return live[2]
    return client.batch(step)[1]


class USplitServer(ServerHalf):
    """Runs the middle: ``z2`` for every ``z1``, then a step on the ``dL/dz2`` the client returns.

    Once told where the run's folder is (``attach_run``), it records the ``dL/dz2`` it
    receives in the rounds ``keep-rounds`` keeps, for the label-leakage attacks (docs/privacy.md).
    """

    #: Whether the reply to ``dL/dz2`` carries ``dL/dz1`` for the client's bottom (``csl-u``).
    returns_input_grad: bool = True

    def __init__(self, top: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig) -> None:
        super().__init__(top, optimizer, config)
        #: Per client, the ``z1`` whose ``z2`` went down, that ``z2`` (with its graph), and the
        #: middle's version then.
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}
        #: Counts the middle's forward passes and steps: each changes what a graph saved
        #: (BatchNorm's running statistics, the weights), so a graph is usable only if none came since.
        self._version = 0
        self.recorder: GradientRecorder | None = None

    def attach_run(self, run_dir: Path, partitions: dict[int, int]) -> None:
        """Record into ``run_dir`` what clients return at kept rounds; ``partitions``: client index -> partition id."""
        batches = getattr(self.config.params, "record_gradient_batches", 0)
        self.recorder = GradientRecorder(run_dir, self.config, partitions, batches)

    def begin_round(self, round_number: int) -> None:
        self._pending.clear()  # a client dropped mid-batch leaves nothing behind
        if self.recorder is not None:
            self.recorder.begin_round(round_number)

    def end_round(self, round_number: int, aggregated: dict[str, torch.Tensor] | None) -> None:
        if self.recorder is not None:
            self.recorder.end_round()

    def awaits_reply(self, client_id: int) -> bool:
        # Called before ``on_upload``: a pending ``z2`` means this upload is ``dL/dz2``.
        return client_id not in self._pending or self.returns_input_grad

    def upload_specs(self, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        """``z1`` alone: the labels stay on the client (training and evaluation)."""
        return [TensorSpec("activations", "z", torch.float32, (None, *activation_shape))]

    def upload_specs_of(self, client_id: int, activation_shape: tuple[int, int, int]) -> list[TensorSpec]:
        return z2_specs(self.config, "gradients") if client_id in self._pending else self.upload_specs(activation_shape)

    def check_upload(self, upload: Packet) -> None:
        for kind, name in (("activations", "z"), ("gradients", "dz")):
            if kind in upload.tensors:
                batch_sizes(upload, len(upload.tensors[kind][name]), self.config.batch_size)
        for key in ("head_loss_sum", "head_correct"):
            value = upload.info.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PayloadError(f"info.{key}: expected a number, got {value!r}")

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        if "activations" in upload.tensors:
            return self._forward(client_id, upload.activations)
        return self._backward(client_id, upload)

    def _forward(self, client_id: int, z1: torch.Tensor) -> Packet:
        z1 = z1.detach().requires_grad_()
        self.top.train()
        with self.watch.time("server"), self.placement.autocast():
            z2 = self.top(z1)
        self._version += 1
        self._pending[client_id] = (z1, z2, self._version)
        return Packet({"activations": {"z": z2.detach()}})

    def _backward(self, client_id: int, upload: Packet) -> Packet | None:
        if client_id not in self._pending:
            raise PayloadError("gradients.dz: received dL/dz2 but no z2 is pending for this client")
        z1, z2, version = self._pending.pop(client_id)
        dz2 = upload.gradients
        if dz2.shape != z2.shape:
            raise PayloadError(f"gradients.dz: shape {list(dz2.shape)}, expected {list(z2.shape)}")
        if self.recorder is not None:
            self.recorder.received(client_id, dz2)  # as received: before the middle uses it
        # Another client's forward pass or step came in between (interleaved serving): the graph
        # is stale, so the forward pass is recomputed with the current weights, and BatchNorm's
        # running statistics, which the first pass already updated, are restored after the backward.
        stale = version != self._version
        kept = {name: buffer.clone() for name, buffer in self.top.named_buffers()} if stale else {}
        with self.watch.time("server"):
            if stale:
                with self.placement.autocast():
                    z2 = self.top(z1)
            self.optimizer.zero_grad(set_to_none=True)
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            z2.backward(self.scaler.scale(dz2.to(z2.dtype)))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with torch.no_grad():
            for name, buffer in self.top.named_buffers():
                if name in kept:
                    buffer.copy_(kept[name])
        self._version += 1
        self._loss_sum += float(upload.info.get("head_loss_sum", 0.0))  # type: ignore[arg-type]
        self._correct += int(upload.info.get("head_correct", 0))  # type: ignore[arg-type]
        self._samples += len(dz2)
        return Packet.gradient(unscaled(z1.grad, scale)) if self.returns_input_grad else None


class DSLUServer(USplitServer):
    """Steps the middle on ``dL/dz2`` and sends nothing back for the client's bottom."""

    returns_input_grad = False


class UShaped(SplitStrategy):
    """What both U-shaped strategies share: the three slices, their keys, the head averaged."""

    topology = "u-shaped"
    params = UShapedParams
    aggregated_modules = ("bottom", "aux", "head")

    @classmethod
    def client_modules(cls, config: RunConfig) -> dict[str, nn.Module]:
        bottom, _, head, aux = build_u_slices(config, head_cut_of(config))
        return {"bottom": bottom} | ({"aux": aux} if cls.uses_aux_head else {}) | {"head": head}

    @classmethod
    def server_slice(cls, config: RunConfig) -> nn.Sequential:
        return build_u_slices(config, head_cut_of(config))[1]


@register
class CSLU(UShaped):
    """Conventional split learning, U-shaped: exact gradients for every slice, labels kept on the client."""

    name = "csl-u"
    client = USplitClient
    server = USplitServer


@register
class DSLU(UShaped):
    """Decoupled split learning, U-shaped: the bottom on its auxiliary loss, head and middle on the loss."""

    name = "dsl-u"
    uses_aux_head = True
    client = DSLUClient
    server = DSLUServer
