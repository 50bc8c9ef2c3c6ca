"""The message types of flsplit's wire protocol, each with the phase its bytes count in.

Every message the ServerApp sends is one of these; the ClientApp registers one handler per
type, and the ledger files its bytes (both directions) under the type's phase. Defining them
once means a new handler or a new round phase cannot misspell a type or count it elsewhere.
"""

from __future__ import annotations

from enum import Enum


class MessageKind(Enum):
    """A Flower message type and the ledger phase of its traffic."""

    HELLO = ("query.hello", "setup")  # who are you, how much data; restore a checkpoint
    STEP = ("train.step", "train")  # one training exchange: what came down, the next upload
    SYNC = ("train.sync", "train")  # upload the modules the strategy averages
    RELAY_FETCH = ("train.sync", "relay")  # the same upload, of a slice that goes to the next client
    RELAY = ("train.relay", "relay")  # the previous client's slice down: continue from it
    EVALUATE = ("evaluate", "eval")  # aggregated weights down, test-split activations up

    def __init__(self, message_type: str, phase: str) -> None:
        self.message_type = message_type
        self.phase = phase
