"""SplitFed-V2 (Thapa et al., 2022): CSL with one shared server model and averaged client slices.

This is ``csl`` with ``client-sync = "average"``, served in the references' order: both
Thapa et al.'s SplitFed code and FSL-SAGE's baseline finish one client's whole local epoch on
the shared top slice before the next client starts (``serve-order = "sequential"``, the
default here; ``interleaved`` alternates batches, which helps the shared top under non-IID
data). "SplitFed-SS" (single server) in FSL-SAGE's figures.
"""

from __future__ import annotations

from strategies.base import register
from strategies.csl import CSL


@register
class SplitFedV2(CSL):
    """``csl`` that serves clients one whole round at a time and averages their slices."""

    name = "splitfed-v2"
    client_sync = "average"
    client_syncs = ("average",)
    sync_hint = 'for un-averaged or relayed slices run strategy = "csl" with that client-sync'
    serve_order = "sequential"
