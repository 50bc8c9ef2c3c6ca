"""The client's privacy defences, set by run-config keys (``docs/privacy.md``, *Defences*).

- ``activation-noise`` (σ): the activations a client uploads carry Gaussian noise of
  ``σ·std(z)``. The noise is a layer between the client's output and the wire: the client's
  own losses see the clean ``z``, and a gradient the server returns for the noisy ``z + n`` is
  exactly the gradient for the clean ``z`` (``d(z + n)/dz = I``), so CSL backpropagates it
  unchanged.
- ``nopeek-weight`` (α): NoPeek (Vepakomma et al., 2020) adds ``α·dCor(x, z)`` to the client's
  loss, so the bottom slice learns activations that carry less of its input.
- ``label-dp = "rr"`` with ``label-dp-epsilon`` (ε): k-ary randomised response on the labels
  that go up (Warner 1965; ε-label-DP as in Ghazi et al., 2021). The client's own losses keep
  the true labels.
- ``gradient-noise`` (σ), U-shaped splits: the ``dL/dz2`` a client's head returns carries
  Gaussian noise of ``σ·std(g)``, the isotropic-noise defence Li et al. (ICLR 2022) measure their
  norm and direction attacks against. The server trains its middle on the noisy gradient.

Noises and labels are drawn from ``(seed, partition, step)``, ``step`` being the client's next
batch when the upload leaves, so a rerun, or a message replayed in another process, uploads
the same values. They apply to training uploads; the test split's activations and labels
go up clean for evaluation (``apps.client_app``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flsplit.config import ConfigError, RunConfig
from flsplit.privacy.dcor import distance_correlation
from flsplit.wire import Packet

#: Keeps the draws apart when they share a (seed, partition, step).
_NOISE_STREAM, _LABEL_STREAM, _GRADIENT_STREAM = 1, 2, 3


def refuse_idle_defences(config: RunConfig, strategy: str, uploads_activations: bool, u_shaped: bool) -> None:
    """Refuse a defence ``strategy`` would silently ignore, since what it protects never goes up."""
    on = {
        "activation-noise": config.activation_noise > 0,
        "nopeek-weight": config.nopeek_weight > 0,
        "label-dp": config.label_dp != "off",
        "gradient-noise": config.gradient_noise > 0,
    }
    if not uploads_activations:
        why = dict.fromkeys(on, "uploads no activations or labels, so there is nothing to defend; leave it at its default, or choose a split strategy")
    elif u_shaped:
        why = {"label-dp": "keeps its labels on the client, so none goes up to randomise; against label leakage "
                           "through the dL/dz2 it returns set gradient-noise"}
    else:
        why = {"gradient-noise": "uploads no gradients (its server computes them); gradient-noise is for the "
                                 "U-shaped strategies (csl-u, dsl-u), whose heads return dL/dz2"}
    problems = [f"  - {key}: strategy '{strategy}' {why[key]}" for key, set_ in on.items() if set_ and key in why]
    if problems:
        raise ConfigError("invalid run config:\n" + "\n".join(problems))


def defences_of(config: RunConfig) -> dict[str, float | str]:
    """The defences a run had on, by key (empty: none), for reports that set runs side by side."""
    on: dict[str, float | str] = {
        "activation-noise": config.activation_noise,
        "nopeek-weight": config.nopeek_weight,
        "gradient-noise": config.gradient_noise,
    }
    if config.label_dp != "off":
        on |= {"label-dp": config.label_dp, "label-dp-epsilon": config.label_dp_epsilon}
    return {key: value for key, value in on.items() if value}


def generator(seed: int, partition: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, partition, step, stream)``: the same on any device and process."""
    key = [seed, partition, step, stream]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))


def with_relative_noise(z: torch.Tensor, sigma: float, rng: torch.Generator) -> torch.Tensor:
    """``z + σ·std(z)·ε``, ε ~ N(0, 1) drawn on the CPU, in ``z``'s dtype (so the bytes sent do not change)."""
    noise = torch.randn(z.shape, generator=rng).to(z.device)
    return (z.float() + sigma * z.float().std() * noise).to(z.dtype)


def keep_probability(epsilon: float, num_classes: int) -> float:
    """k-ary randomised response's chance of sending the true label: ``e^ε / (e^ε + k − 1)``."""
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-epsilon))


def randomised_labels(y: torch.Tensor, epsilon: float, num_classes: int, rng: torch.Generator) -> torch.Tensor:
    """Each label kept with ``keep_probability``, else replaced by one of the other ``k − 1`` classes, uniformly."""
    keep = torch.rand(y.shape, generator=rng) < keep_probability(epsilon, num_classes)
    shift = torch.randint(1, num_classes, y.shape, generator=rng)  # another class, each equally likely
    return torch.where(keep, y.cpu(), (y.cpu() + shift) % num_classes).to(y.device)


def defend_upload(upload: Packet, config: RunConfig, partition: int, step: int) -> Packet:
    """Apply ``activation-noise``, ``label-dp`` and ``gradient-noise`` to a training upload, in place; returns it."""
    if "activations" in upload.tensors and config.activation_noise > 0:
        rng = generator(config.seed, partition, step, _NOISE_STREAM)
        upload.activations = with_relative_noise(upload.activations, config.activation_noise, rng)
    if "gradients" in upload.tensors and config.gradient_noise > 0:
        rng = generator(config.seed, partition, step, _GRADIENT_STREAM)
        upload.gradients = with_relative_noise(upload.gradients, config.gradient_noise, rng)
    if "labels" in upload.tensors and config.label_dp == "rr":
        rng = generator(config.seed, partition, step, _LABEL_STREAM)
        # Written through ``tensors``: ``Packet.labels`` has no setter, as only this defence may change them.
        upload.tensors["labels"]["y"] = randomised_labels(upload.labels, config.label_dp_epsilon, config.num_classes, rng)
    return upload


def nopeek_loss(config: RunConfig, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
    """``α·dCor(x, z)`` for the client's loss, or ``None`` when ``nopeek-weight`` is 0 (or the batch has one sample)."""
    if config.nopeek_weight == 0 or len(x) < 2:
        return None
    with torch.autocast(z.device.type, enabled=False):  # in float64, whatever autocast made z
        return config.nopeek_weight * distance_correlation(x.double(), z.double()).float()


def backward_at_cut(
    config: RunConfig, scaler: torch.amp.GradScaler, x: torch.Tensor | None, z: torch.Tensor, dz: torch.Tensor
) -> None:
    """Backpropagate the cut-layer gradient ``dz`` (already scaled by ``scaler``) into ``z``'s
    graph, plus NoPeek's ``α·dCor(x, z)`` scaled alike (fp16 on CUDA; else unscaled).
    ``x`` may be ``None`` while NoPeek is off."""
    penalty = None if x is None else nopeek_loss(config, x, z)
    if penalty is None:
        z.backward(dz)
    else:
        torch.autograd.backward([z, scaler.scale(penalty)], [dz, None])
