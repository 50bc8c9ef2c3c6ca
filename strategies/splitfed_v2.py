"""SplitFed-V2 (Thapa et al., 2022): CSL with one shared server model and averaged client slices.

This is exactly ``csl`` with ``aggregate-clients = true``; the name exists so that a run config
can say what it means. The server serves clients one at a time, in partition order, on the
same top slice ("SplitFed-SS", single server, in FSL-SAGE's figures).
"""

from __future__ import annotations

from strategies.base import register
from strategies.csl import CSL


@register
class SplitFedV2(CSL):
    """``csl`` that always averages the client slices after each round."""

    name = "splitfed-v2"
    always_aggregates = True
