"""Split-learning strategies, one module each, selected by the ``strategy`` run-config key."""

from strategies import (  # noqa: F401 - importing registers them
    cse_fsl,
    csl,
    dsl,
    fedavg,
    fsl_sage,
    hybrid,
    splitfed_v1,
    splitfed_v2,
    u_shaped,
)
from strategies.base import (
    ClientHalf,
    ClientSlice,
    ServerHalf,
    SplitStrategy,
    get_strategy,
    parse_config,
    register,
    strategy_names,
)

__all__ = [
    "ClientHalf",
    "ClientSlice",
    "ServerHalf",
    "SplitStrategy",
    "get_strategy",
    "parse_config",
    "register",
    "strategy_names",
]
