"""Lossy wire formats for activations and gradients: fp16, bf16, and int8 with per-channel scale.

Only the tensors that dominate traffic (activations up, gradients down) are compressed; labels
and model weights always travel exactly. The ledger counts what is actually sent.
"""

from __future__ import annotations

import torch

WIRE_DTYPES = ("fp32", "fp16", "bf16", "int8")
COMPRESSIBLE_KINDS = ("activations", "gradients")
SCALE_SUFFIX = ".scale"


def compress(tensor: torch.Tensor, wire_dtype: str) -> dict[str, torch.Tensor]:
    """The parts that carry ``tensor`` in ``wire_dtype``, keyed by suffix (``""``, ``".scale"``)."""
    if wire_dtype == "fp32":
        return {"": tensor.float()}
    if wire_dtype == "fp16":
        return {"": tensor.half()}
    if wire_dtype == "bf16":
        # NumPy has no bfloat16, so the 16-bit patterns travel as int16.
        return {"": tensor.bfloat16().view(torch.int16)}
    if wire_dtype == "int8":
        scale = _channel_scale(tensor)
        q = torch.round(tensor / _broadcast(scale, tensor)).clamp_(-127, 127).to(torch.int8)
        return {"": q, SCALE_SUFFIX: scale}
    raise ValueError(f"wire-dtype: unknown '{wire_dtype}'; choose one of {WIRE_DTYPES}")


def decompress(parts: dict[str, torch.Tensor], wire_dtype: str) -> torch.Tensor:
    """Float32 tensor back from ``compress``'s parts."""
    data = parts[""]
    if wire_dtype == "bf16":
        return data.view(torch.bfloat16).float()
    if wire_dtype == "int8":
        return data.float() * _broadcast(parts[SCALE_SUFFIX], data)
    return data.float()


def part_dtypes(wire_dtype: str) -> dict[str, torch.dtype]:
    """The dtype each part must arrive in (validation of received payloads)."""
    return {
        "fp32": {"": torch.float32},
        "fp16": {"": torch.float16},
        "bf16": {"": torch.int16},
        "int8": {"": torch.int8, SCALE_SUFFIX: torch.float32},
    }[wire_dtype]


def _channel_scale(tensor: torch.Tensor) -> torch.Tensor:
    """Per-channel (dim 1) max-abs / 127; channels that are all zero get scale 1."""
    dims = [d for d in range(tensor.dim()) if d != 1]
    amax = tensor.detach().abs().amax(dim=dims).float() if dims else tensor.detach().abs().float()
    return torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))


def _broadcast(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    shape = [1] * like.dim()
    shape[1] = -1
    return scale.view(shape)
