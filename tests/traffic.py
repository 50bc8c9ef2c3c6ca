"""What every run reports, and the sizes on the wire the traffic tests bound the ledger with."""

from __future__ import annotations

import torch

from flsplit.config import parse_run_config
from flsplit.wire import Packet, encode, serialized_size, weights_of
from strategies import get_strategy

#: Round metrics every run writes to ``metrics.jsonl``.
REQUIRED = {
    "round", "strategy", "test_accuracy", "test_loss", "train_loss", "aux_accuracy", "bytes_up", "bytes_down",
    "bytes_up_activations", "bytes_up_labels", "bytes_down_gradients", "bytes_model_sync",
    "client_fwd_s", "client_bwd_s", "server_s", "comm_s",
}
Z_BATCH = 16 * 16 * 32 * 32 * 4  # one batch of activations at cut s of resnet20 (16 x 16x32x32 floats)
FRAMING = 2048  # array and record headers per message, generously


def weights_bytes(strategy: str, modules: tuple[str, ...]) -> int:
    """Serialized size of one upload of ``modules`` of the strategy's client (a ``weights`` record).

    Random values: Flower ships identical arrays once, and a fresh model has many (BatchNorm's
    ones and zeros) that training makes distinct.
    """
    config = parse_run_config({"dataset": "synthetic", "strategy": strategy})
    every = get_strategy(strategy).client_modules(config)
    weights = {k: torch.randn_like(v) for k, v in weights_of({m: every[m] for m in modules}).items()}
    return serialized_size(encode(Packet({"weights": weights}))["weights"])
