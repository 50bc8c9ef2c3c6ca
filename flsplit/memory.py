"""Peak training memory of one party, measured at the C allocator while it trains.

A party's peak is what it must hold at its worst moment: its persistent state (parameters,
gradients, optimizer buffers), whatever it already held when the window opened (a pending
autograd graph, a received upload), and the highest rise of the process's allocated heap
during the window. The rise is read from glibc's ``mallinfo2`` (bytes handed out by
``malloc``, including ``mmap``-ed blocks, which is where PyTorch's CPU tensors live) after every
ATen operation, forward and backward, through a ``TorchDispatchMode``. Frees are seen as they
happen, so a graph released during the backward pass lowers the curve. Only transient
buffers that a single kernel allocates and frees internally are invisible.

On CUDA the window also reads ``torch.cuda.max_memory_allocated`` of the party's device (reset
when the window opens), the measure the FSL-SAGE paper reports per party: everything this
process has allocated on the device at its highest point, not only this party's part.

The cross-check counts the bytes autograd saves for the backward pass (saved-tensor hooks,
unique storages, parameters excluded): an independent lower bound on the activation memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from flsplit.device import cuda_peak, cuda_peak_start, device_of


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


@lru_cache(maxsize=1)
def _mallinfo2() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    try:
        function = libc.mallinfo2
    except AttributeError:
        raise RuntimeError("memory measurement needs glibc >= 2.33 (mallinfo2); set memory-probe=0") from None
    function.restype = _MallInfo2
    return function


def heap_in_use() -> int:
    """Bytes the process has allocated through ``malloc`` right now (all threads)."""
    info = _mallinfo2()()
    return int(info.uordblks + info.hblkhd)


def state_bytes(modules: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer] = ()) -> int:
    """Bytes of parameters, buffers, existing gradients and optimizer state (shared storage once)."""
    tensors: list[torch.Tensor] = []
    for module in modules:
        tensors += list(module.parameters()) + list(module.buffers())
        tensors += [p.grad for p in module.parameters() if p.grad is not None]
    for optimizer in optimizers:
        tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return _unique_bytes(tensors)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages behind ``tensors``, each storage counted once."""
    return _unique_bytes(list(tensors))


def _unique_bytes(tensors: list[torch.Tensor]) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


#: Set while ``unmeasured`` runs: open windows neither sample the heap nor record saved tensors.
_paused = False


@contextmanager
def unmeasured() -> Iterator[None]:
    """Leave the ``with`` body out of any open ``measure`` window.

    For work that is not the training step being measured and whose per-operation sampling
    would cost far more than the work itself, such as FSL-SAGE's alignment (thousands of
    second-order steps). Its memory is then not in the window's peak.
    """
    global _paused
    was, _paused = _paused, True
    try:
        yield
    finally:
        _paused = was


class _HeapPeak(TorchDispatchMode):
    """Samples the heap after every ATen operation and keeps the highest value."""

    def __init__(self) -> None:
        super().__init__()
        self.start = heap_in_use()
        self.peak = self.start

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not _paused:
            self.peak = max(self.peak, heap_in_use())
        return out


class _SavedTensors:
    """Storages autograd saves for backward during a window (parameters excluded).

    A storage counts from the moment autograd saves it until the saved reference dies (its
    graph is freed), so ``peak`` is the most saved bytes alive at once.
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.alive: dict[int, tuple[int, weakref.ref]] = {}
        self.alive_bytes = 0  # saved storages still referenced, as by a graph kept for later
        self.peak = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if _paused:
            return tensor
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self.exclude and pointer not in self.alive:
            self.alive[pointer] = (storage.nbytes(), weakref.ref(tensor, lambda _, p=pointer: self._release(p)))
            self.alive_bytes += storage.nbytes()
            self.peak = max(self.peak, self.alive_bytes)
        return tensor

    def _release(self, pointer: int) -> None:
        size, _ = self.alive.pop(pointer, (0, None))
        self.alive_bytes -= size


@dataclass
class MemoryReading:
    """One window's measurement, in bytes."""

    peak: int = 0  # persistent state + held at start + highest heap rise
    saved: int = 0  # most bytes of autograd's saved tensors alive at once (cross-check)
    held_after: int = 0  # saved tensors still alive when the window closed
    cuda_peak: int | None = None  # torch.cuda.max_memory_allocated over the window; None off CUDA


@contextmanager
def measure(modules: Iterable[nn.Module], optimizers: Iterable[torch.optim.Optimizer], held: int = 0) -> Iterator[MemoryReading]:
    """Measure a party's peak training memory over the ``with`` body.

    Parameters
    ----------
    modules, optimizers
        The party's trainable state, counted at the window's start.
    held
        Bytes the party already holds for its training that the heap rise cannot see because
        they were allocated before the window (a pending graph, a received upload).
    """
    modules = list(modules)
    device = device_of(modules)
    reading = MemoryReading()
    persistent = state_bytes(modules, optimizers)
    saved = _SavedTensors({p.untyped_storage().data_ptr() for m in modules for p in m.parameters()})
    cuda_peak_start(device)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda tensor: tensor), _HeapPeak() as heap:
        yield reading
    reading.cuda_peak = cuda_peak(device)
    reading.peak = persistent + held + max(0, heap.peak - heap.start)
    reading.saved = saved.peak
    reading.held_after = saved.alive_bytes
