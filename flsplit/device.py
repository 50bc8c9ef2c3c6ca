"""Where a party computes: its torch device, its autocast precision, and the moves at the wire.

``device`` names the device as a run-config key (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
``mps``); each party resolves it in its own process, so a ClientApp that Ray gave a GPU sees
that GPU as ``cuda`` (Ray sets ``CUDA_VISIBLE_DEVICES`` per worker) and the ServerApp uses
``server-device``. Modules, optimizer state and batches live on the device; payloads are
decoded and validated on the CPU and moved once per payload, and leave the device once per
payload at ``flsplit.wire.encode`` (pinned host memory and non-blocking copies on CUDA).

``amp`` turns on autocast for the forward passes (``bf16`` anywhere, ``fp16`` on CUDA with a
gradient scaler); ``deterministic`` asks cuDNN and cuBLAS for bit-reproducible kernels
(``docs/devices.md``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
AMP_CHOICES = ("off", "bf16", "fp16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: cuBLAS needs this workspace setting for deterministic results (CUDA >= 10.2).
CUBLAS_WORKSPACE = ":4096:8"


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist in this process (raised at start-up, naming the key)."""


def check_device(value: str) -> str:
    """``value`` if it names a device this module can resolve; else a ``ValueError`` listing the choices."""
    if not _DEVICE.fullmatch(value):
        raise ValueError(f"unknown device '{value}'; choose one of {list(DEVICE_CHOICES)} (N: a GPU index)")
    return value


def check_amp(amp: str, device: str, key: str = "device") -> None:
    """Reject ``fp16`` autocast for a device that is not CUDA (``ValueError`` saying why)."""
    if amp == "fp16" and not device.startswith("cuda"):
        raise ValueError(
            f"'fp16' needs CUDA, but {key} is '{device}': fp16 training needs a gradient scaler, "
            "and flsplit scales gradients on CUDA only (CPU autocast has no fp16 path worth using); use amp = 'bf16'"
        )


def resolve_device(name: str, key: str = "device") -> torch.device:
    """The torch device ``name`` stands for in this process; an error naming ``key`` if it is absent.

    ``auto``: CUDA if present, else Apple ``mps``, else CPU.
    """
    check_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"{key}: '{name}' was asked for, but this process sees no CUDA device (torch {torch.__version__}, "
                "built with CUDA: " + str(torch.backends.cuda.is_built()) + "); in simulation give clients GPUs with "
                "client-resources-num-gpus, or choose one of " + str(list(DEVICE_CHOICES))
            )
        index = int(name.split(":")[1]) if ":" in name else None
        if index is not None and index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"{key}: '{name}' was asked for, but this process sees {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"{key}: 'mps' was asked for, but Apple's Metal backend is not available here")
    return torch.device(name)


@dataclass(frozen=True)
class Placement:
    """A party's device and autocast precision (``amp``)."""

    device: torch.device = torch.device("cpu")
    amp: str = "off"

    @classmethod
    def of(cls, device: str, amp: str, key: str = "device") -> Placement:
        """Resolve ``device`` (named by ``key`` in errors) and check ``amp`` against what it resolved to."""
        resolved = resolve_device(device, key)
        try:
            check_amp(amp, resolved.type, key)
        except ValueError as err:
            raise DeviceUnavailable(f"amp: {err} ({key} '{device}' resolved to {resolved.type} here)") from None
        return cls(resolved, amp)

    def autocast(self) -> AbstractContextManager:
        """Autocast for a forward pass (a no-op context when ``amp`` is ``off``)."""
        if self.amp == "off":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AMP_DTYPES[self.amp])

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler: enabled for ``fp16`` on CUDA, else one whose methods pass through."""
        enabled = self.amp == "fp16" and self.device.type == "cuda"
        return torch.amp.GradScaler(self.device.type if enabled else "cpu", enabled=enabled)

    def put(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this device (a pinned, non-blocking copy from the CPU to CUDA)."""
        return to_device(tensor, self.device)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; the same tensor if it is there already."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_host(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of ``tensors``, for the wire; CUDA tensors go through pinned memory, one sync for all."""
    out, synced = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        if tensor.device.type == "cuda":
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            synced.add(tensor.device)
            out[name] = host
        else:
            out[name] = tensor.cpu()
    for device in synced:
        torch.cuda.synchronize(device)
    return out


def device_of(modules: Iterable[torch.nn.Module]) -> torch.device:
    """The device of the first parameter of ``modules`` (CPU if they have none)."""
    for module in modules:
        for parameter in module.parameters():
            return parameter.device
    return torch.device("cpu")


def host_optimizer_steps(optimizer: torch.optim.Optimizer) -> None:
    """Keep the ``step`` counters of a non-fused, non-capturable optimizer on the CPU.

    Where torch itself creates them. A checkpoint loaded with ``map_location`` on a GPU would
    otherwise leave them there, and every step would then wait for the GPU to read them.
    """
    for group in optimizer.param_groups:
        if group.get("fused") or group.get("capturable"):
            continue
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if isinstance(state.get("step"), torch.Tensor) and state["step"].device.type != "cpu":
                state["step"] = state["step"].cpu()


def set_deterministic(enabled: bool) -> None:
    """Ask for bit-reproducible kernels (cuDNN, cuBLAS, torch's own), or leave torch's defaults.

    On: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic kernel
    raises), cuDNN deterministic with benchmarking off, and cuBLAS's workspace setting, which
    must be in the environment before cuBLAS starts (set here if the user has not).
    """
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def cuda_peak_start(device: torch.device) -> None:
    """Open a CUDA peak window on ``device`` (nothing for other devices)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak(device: torch.device) -> int | None:
    """``torch.cuda.max_memory_allocated`` since ``cuda_peak_start``; ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))
