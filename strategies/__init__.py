"""Split-learning strategies, one module each, selected by the ``strategy`` run-config key."""

from strategies import csl, dsl, fsl_sage  # noqa: F401 - importing registers them
from strategies.base import (
    ClientHalf,
    ClientSlice,
    ServerHalf,
    SplitStrategy,
    get_strategy,
    register,
    strategy_names,
)

__all__ = [
    "ClientHalf",
    "ClientSlice",
    "ServerHalf",
    "SplitStrategy",
    "get_strategy",
    "register",
    "strategy_names",
]
