"""Privacy measurements: what an honest-but-curious server can learn from a split run.

``dcor`` (distance correlation, also a differentiable loss), ``gradient_leakage`` (norm and
direction label attacks), ``gradient_record`` (the ``dL/dz2`` a U-shaped server records for
them), ``label_inference`` (probe and centroid), ``inversion`` (decoder, MSE/PSNR/SSIM),
``surrogate`` (the black-box bottom), ``attack_data`` (auxiliary and target images),
``attacked_run`` (a run's slices at one round) and ``report`` (``flsplit leak``). Only ``dcor``
is imported here: most of the rest needs the optional ``torchmetrics`` (``flsplit[privacy]``);
``gradient_record`` does not, as the U-shaped server half imports it.
"""

from flsplit.privacy.dcor import batched_distance_correlation, distance_correlation

__all__ = ["batched_distance_correlation", "distance_correlation"]
