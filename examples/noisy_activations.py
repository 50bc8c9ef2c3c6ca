"""A plug-in strategy: DSL whose uploaded activations carry Gaussian noise.

The client trains exactly as in DSL, on its clean activations; only the copy that goes to
the server is perturbed, ``z + σ·std(z)·ε`` with ε ~ N(0, 1), a simple way to blur what the
server learns about individual samples. Nothing in ``flsplit`` changes: select it with

    flwr run . --run-config "strategy='examples.noisy_activations:NoisyDSL' strategy-config='noisy-scale = 0.2'"

``noisy-scale`` is the strategy's own run-config key, declared by ``NoisyParams`` and
validated with the rest of the config. ``docs/strategies.md`` walks through this file.

This file is a plug-in tutorial. To add such noise to any strategy's uploads, set the
built-in ``activation-noise`` key instead (``docs/privacy.md``, *Defences*).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from flsplit.config import StrategyParams
from flsplit.wire import Packet
from strategies import ClientSlice, register
from strategies.dsl import DSL, DSLClient


class NoisyParams(StrategyParams):
    """The plug-in's own key, prefixed with its name so it cannot collide with another's."""

    noisy_scale: float = Field(0.1, ge=0)  # noise std, relative to the std of the uploaded activations


class NoisyDSLClient(DSLClient):
    """DSL's client, adding noise to the activations it uploads."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        upload = super().train(request, client, max_bytes)
        if upload.tensors:
            z = upload.activations
            # Seeded by (seed, partition, step): a rerun, or a message replayed in another
            # process, sends the same noise.
            key = [self.config.seed, client.loader.partition_id, client.counters["step"]]
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
            noise = torch.randn(z.shape, generator=generator).to(z.device)  # drawn on the CPU: the same on any device
            upload.activations = z + self.config.params.noisy_scale * z.std() * noise
        return upload


@register
class NoisyDSL(DSL):
    """Selected by ``strategy = "examples.noisy_activations:NoisyDSL"`` (or "noisy-dsl" once imported)."""

    name = "noisy-dsl"
    params = NoisyParams
    client = NoisyDSLClient
