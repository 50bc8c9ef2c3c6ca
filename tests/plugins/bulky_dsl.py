"""An out-of-tree strategy for the large-payload test: DSL whose one upload exceeds 100 MB."""

from __future__ import annotations

import torch

from flsplit.wire import Packet
from strategies import ClientSlice
from strategies.dsl import DSL, DSLClient

TARGET_BYTES = 110 * 2**20


class BulkyClient(DSLClient):
    """Trains one real chunk, then repeats its activations until the upload passes 100 MiB."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        upload = super().train(request, client, max_bytes)
        if not upload.tensors:
            return upload
        z, y = upload.activations, upload.labels
        repeats = -(-TARGET_BYTES // (z.numel() * z.element_size()))
        # Scale each copy differently: Flower ships identical 5 MiB chunks only once.
        copies = torch.cat([z * (1.0 + 1e-3 * k) for k in range(repeats)])
        upload.tensors = Packet.upload(copies, y.repeat(repeats)).tensors
        upload.info["batch_sizes"] = list(upload.info["batch_sizes"]) * repeats
        return upload


class BulkyDSL(DSL):
    """Selected with ``strategy = "tests.plugins.bulky_dsl:BulkyDSL"``."""

    name = "bulky-dsl"
    client = BulkyClient
