"""The optimizer every party builds, and the learning rate of each round.

Each method's reference uses its own optimizer: the DSL paper SGD with momentum, FSL-SAGE and
CSE-FSL Adam. ``optimizer`` picks one for every party of a run (client slices and heads, the
server's top slice, SplitFed-V1's per-client copies). The schedule is a pure function of the
round number, so every party applies the same rate without talking to the others, and a
resumed run continues with exactly the rate it would have had.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flsplit.config import RunConfig

#: ``step`` multiplies the rate by this at half and at three quarters of the run.
STEP_FACTOR = 0.1


def build_optimizer(params: list[nn.Parameter], config: RunConfig) -> torch.optim.Optimizer:
    """The configured optimizer over ``params`` at the rate of round 1.

    Adam takes ``lr`` and ``weight-decay`` (L2, as ``torch.optim.Adam``); SGD also ``momentum``.
    """
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def round_lr(config: RunConfig, round_number: int) -> float:
    """The learning rate of round ``round_number`` (1-based) under ``lr-warmup`` and ``lr-schedule``.

    The first ``lr-warmup`` rounds (W) climb linearly, round r at ``lr * r / (W + 1)``, so
    momentum SGD does not start at full rate on a fresh network; the schedule then spans the
    remaining R - W rounds as if they were the whole run. ``cosine`` anneals from ``lr`` towards 0
    after the last round (``lr * (1 + cos(pi * (r - 1) / R)) / 2``); ``step`` divides by 10 at
    rounds R/2 and 3R/4.
    """
    warmup = config.lr_warmup
    if round_number <= warmup:
        return config.lr * round_number / (warmup + 1)
    total, done = max(config.num_server_rounds - warmup, 1), round_number - 1 - warmup
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * done / total))
    if config.lr_schedule == "step":
        drops = sum(done >= milestone for milestone in (total // 2, (3 * total) // 4) if milestone > 0)
        return config.lr * STEP_FACTOR**drops
    return config.lr


def set_round_lr(optimizer: torch.optim.Optimizer, config: RunConfig, round_number: int) -> None:
    """Give every parameter group of ``optimizer`` the rate of ``round_number``."""
    set_lr(optimizer, round_lr(config, round_number))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
