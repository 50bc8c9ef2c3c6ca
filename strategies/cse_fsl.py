"""CSE-FSL (Mu and Shen, 2023): DSL that uploads only every ``q``-th batch and averages heads.

The client steps its slice and auxiliary head on the local loss after every batch, as in DSL,
but sends activations only for local iterations 0, q, 2q, ... of each round (``upload-every``);
the server takes one step per upload. After every round the client slices and the auxiliary
heads are averaged, so the heads do not drift apart on non-IID data.
"""

from __future__ import annotations

from pydantic import Field

from flsplit.config import StrategyParams
from strategies.base import ClientSlice, SplitStrategy, register
from strategies.dsl import DSLClient, DSLServer


class UploadEvery(StrategyParams):
    """Settings of the strategies that upload only some batches (CSE-FSL, FSL-SAGE)."""

    upload_every: int = Field(5, ge=1)  # q: local iterations 0, q, 2q, ... of each round go up


class CSEFSLClient(DSLClient):
    """DSL's local training, uploading only every ``upload-every``-th batch of a round."""

    def uploads(self, client: ClientSlice, step: int) -> bool:
        return client.local_iteration(step) % self.config.params.upload_every == 0


@register
class CSEFSL(SplitStrategy):
    """Communication- and storage-efficient federated split learning."""

    name = "cse-fsl"
    mixes_cuts = True
    uses_aux_head = True
    client_sync = "average"
    params = UploadEvery
    client = CSEFSLClient
    server = DSLServer
