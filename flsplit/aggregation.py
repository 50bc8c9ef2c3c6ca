"""Averaging of model weights through a Flower strategy named in the run config.

Flower's strategies (``flwr.serverapp.strategy``) aggregate reply messages in
``Strategy.aggregate_train``. flsplit uses that method for everything it averages (client
slices, auxiliary heads, SplitFed-V1's per-client server copies), so the ``aggregation`` key
swaps FedAvg for a robust rule such as FedMedian or Krum without any code of ours changing.

Only strategies whose ``aggregate_train`` is complete on its own are accepted. Those that keep
server-side state which Flower seeds in ``configure_train`` (a split round never calls it), or
that aggregate something other than tensors, are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategies
from flwr.serverapp.strategy import Strategy

WEIGHT_KEY = "num-examples"  # the MetricRecord key every Flower strategy weights by

#: Flower strategies whose ``aggregate_train`` works on the replies alone, with default settings.
SUPPORTED = ("FedAvg", "FedProx", "FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum", "Bulyan")

_OPTIMIZER_STATE = "keeps a server-side optimizer whose state Flower seeds in configure_train, which split rounds never call"
_UNSUPPORTED = {
    "FedAvgM": _OPTIMIZER_STATE,
    "FedAdagrad": _OPTIMIZER_STATE,
    "FedAdam": _OPTIMIZER_STATE,
    "FedYogi": _OPTIMIZER_STATE,
    "QFedAvg": "needs the clients' training losses and the previous global model from configure_train",
    "FedXgbBagging": "aggregates XGBoost trees, not tensors",
    "FedXgbCyclic": "aggregates XGBoost trees, not tensors",
    "DifferentialPrivacyClientSideAdaptiveClipping": "wraps another strategy and needs constructor arguments",
    "DifferentialPrivacyClientSideFixedClipping": "wraps another strategy and needs constructor arguments",
    "DifferentialPrivacyServerSideAdaptiveClipping": "wraps another strategy and needs constructor arguments",
    "DifferentialPrivacyServerSideFixedClipping": "wraps another strategy and needs constructor arguments",
}


def check_aggregation(name: str) -> str:
    """Return ``name`` if it is a supported Flower strategy; raise ``ValueError`` saying why not."""
    if name in SUPPORTED:
        return name
    if name in _UNSUPPORTED:
        raise ValueError(f"Flower's {name} cannot be used here: it {_UNSUPPORTED[name]}; choose one of {list(SUPPORTED)}")
    raise ValueError(f"unknown Flower strategy '{name}'; choose one of {list(SUPPORTED)}")


def build_aggregator(name: str) -> Strategy:
    """A fresh instance (default settings) of the Flower strategy class called ``name``."""
    return getattr(flwr_strategies, check_aggregation(name))()


def aggregate_replies(aggregator: Strategy, server_round: int, replies: Iterable[Message]) -> dict[str, torch.Tensor] | None:
    """Aggregate client replies (one weights ``ArrayRecord`` and a ``num-examples`` metric each).

    Returns float32 tensors by key, or ``None`` when the strategy declines (too few replies
    for Bulyan, say).
    """
    arrays, _ = aggregator.aggregate_train(server_round, list(replies))
    if arrays is None:
        return None
    return {key: torch.from_numpy(array.numpy().astype(np.float32)) for key, array in arrays.items()}


def aggregate_weights(
    aggregator: Strategy, server_round: int, weighted: Iterable[tuple[Mapping[str, torch.Tensor], int]]
) -> dict[str, torch.Tensor] | None:
    """Aggregate weights held by the server itself (``(weights, num_examples)`` pairs).

    They are wrapped as the reply messages that ``aggregate_train`` expects, so server-side
    averaging follows the same Flower rule as the clients' slices.
    """
    replies = [_as_reply(weights, count, source) for source, (weights, count) in enumerate(weighted)]
    return aggregate_replies(aggregator, server_round, replies) if replies else None


def _as_reply(weights: Mapping[str, torch.Tensor], num_examples: int, source: int) -> Message:
    content = RecordDict(
        {
            "weights": ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in weights.items()}),
            "metrics": MetricRecord({WEIGHT_KEY: num_examples}),
        }
    )
    metadata = Metadata(
        run_id=0,
        message_id=f"local-{source}",
        src_node_id=source,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="",
        created_at=0.0,
        ttl=0.0,
        message_type="train",
    )
    return Message(content=content, metadata=metadata)


__all__ = ["SUPPORTED", "WEIGHT_KEY", "aggregate_replies", "aggregate_weights", "build_aggregator", "check_aggregation"]
