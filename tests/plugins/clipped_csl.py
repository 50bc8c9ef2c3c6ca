"""A plug-in written from docs/strategies.md alone: CSL whose server clips the gradient it returns.

It has its own key, ``clip-norm``, passed without editing the app's files:

    flwr run . --run-config "strategy='tests.plugins.clipped_csl:ClippedCSL' strategy-config='clip-norm = 0.5'"

It reports a metric from each half (the server's ``take_metrics``, the client's
``Packet.add_metric``) and logs through a logger below ``flwr``, so its lines show in
``flwr run --stream``.
"""

from __future__ import annotations

import logging

import torch
from pydantic import Field
from torch import nn

from flsplit.config import RunConfig, StrategyParams
from flsplit.wire import Packet
from strategies import ClientSlice, register
from strategies.csl import CSL, CSLClient, CSLServer

logger = logging.getLogger("flwr.clipped_csl")


class ClipParams(StrategyParams):
    clip_norm: float = Field(1.0, gt=0)  # the run-config key `clip-norm`


class ClippedServer(CSLServer):
    """CSL's server; every gradient it returns has an L2 norm of at most ``clip-norm``."""

    def __init__(self, top: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig) -> None:
        super().__init__(top, optimizer, config)
        self.clipped = self.replies = 0  # this round's counts, for take_metrics

    def on_upload(self, client_id: int, upload: Packet) -> Packet | None:
        reply = super().on_upload(client_id, upload)
        if reply is not None:
            norm = float(reply.gradients.norm())
            limit = self.config.params.clip_norm
            if norm > limit:
                reply.gradients = reply.gradients * (limit / norm)
                self.clipped += 1
            self.replies += 1
        return reply

    def end_round(self, round_number: int, aggregated: dict | None) -> None:
        logger.info("clipped-csl: clipped %d of %d gradients in round %d", self.clipped, self.replies, round_number)

    def take_metrics(self) -> dict[str, float]:
        out = super().take_metrics() | {"clipped_gradients": self.clipped, "returned_gradients": self.replies}
        self.clipped = self.replies = 0
        return out


class ClippedClient(CSLClient):
    """CSL's client; it reports how many gradients it received and the sum of their norms."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        upload = super().train(request, client, max_bytes)
        if "gradients" in request.tensors:
            upload.add_metric("received_gradients", 1)
            upload.add_metric("received_norm_sum", float(request.gradients.norm()))
        if upload.info["done"]:
            logger.info("clipped-csl: client %d ends round %d", client.loader.partition_id, request.info["round"])
        return upload


@register
class ClippedCSL(CSL):
    name = "clipped-csl"
    params = ClipParams
    client = ClippedClient
    server = ClippedServer
