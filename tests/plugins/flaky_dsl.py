"""An out-of-tree strategy for the failure tests: DSL whose client 1 raises in round 2."""

from __future__ import annotations

from flsplit.wire import Packet
from strategies import ClientSlice
from strategies.dsl import DSL, DSLClient


class FlakyClient(DSLClient):
    """Fails on purpose, as a crashing client would, then behaves again."""

    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        if client.loader.partition_id == 1 and request.info.get("round") == 2:
            raise RuntimeError("injected failure of client 1 in round 2")
        return super().train(request, client, max_bytes)


class FlakyDSL(DSL):
    """Selected with ``strategy = "tests.plugins.flaky_dsl:FlakyDSL"``."""

    name = "flaky-dsl"
    client = FlakyClient
