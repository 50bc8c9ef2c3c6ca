"""Privacy measurements: what an honest-but-curious server can learn from a split run."""

from flsplit.privacy.dcor import batched_distance_correlation, distance_correlation

__all__ = ["batched_distance_correlation", "distance_correlation"]
