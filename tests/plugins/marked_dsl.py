"""An out-of-tree strategy for the kill tests: DSL whose clients, from round 2 on, say where they are and go slowly.

Each training call in round 2 or later touches ``<$FLSPLIT_TEST_MARKS>/round<r>-client<partition>``
and sleeps 0.5 s, so a test can SIGKILL a node while its round is streaming.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flsplit.wire import Packet
from strategies import ClientSlice
from strategies.dsl import DSL, DSLClient

MARKS_ENV = "FLSPLIT_TEST_MARKS"


class MarkedClient(DSLClient):
    def train(self, request: Packet, client: ClientSlice, max_bytes: int) -> Packet:
        round_number = int(request.info.get("round", 0))  # type: ignore[arg-type]
        if round_number >= 2 and os.environ.get(MARKS_ENV):
            (Path(os.environ[MARKS_ENV]) / f"round{round_number}-client{client.loader.partition_id}").touch()
            time.sleep(0.5)
        return super().train(request, client, max_bytes)


class MarkedDSL(DSL):
    """Selected with ``strategy = "tests.plugins.marked_dsl:MarkedDSL"``."""

    name = "marked-dsl"
    client = MarkedClient
