"""Peak CUDA caching-allocator memory of *this* process, via torch, without importing torch.

``torch_peak_memory()`` returns a context manager; after the block ``.reading`` holds a
:class:`TorchMemReading`.  It only acts if torch is already in ``sys.modules`` and CUDA is
available *and already initialised*: it never imports torch and never creates a CUDA context
(doing so in a parent process breaks fork-based workers, e.g. vLLM's).

* CUDA initialised at enter: peak stats are reset on every visible device at enter and
  ``max_memory_allocated`` / ``max_memory_reserved`` are read at exit (summed over devices).
* CUDA first initialised inside the block (e.g. the model is loaded there): nothing is reset;
  the peaks read at exit are since initialisation, i.e. inside the window.
* Otherwise (no torch, no CUDA, not initialised at exit): both fields are ``None``.

Only this process's allocator is seen: memory of worker processes (vLLM's engine core, tensor
parallel workers), CUDA contexts, NCCL buffers and non-torch allocations are not included.
Never raises.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class TorchMemReading:
    peak_allocated_bytes: Optional[int]
    peak_reserved_bytes: Optional[int]


def _cuda_ready() -> Any:
    """The ``torch`` module if it is imported and CUDA is available and initialised, else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        cuda = torch.cuda
        if not cuda.is_available() or not cuda.is_initialized():
            return None
        return torch
    except Exception:  # noqa: BLE001
        return None


class TorchPeakMemory:
    def __init__(self) -> None:
        self.reading: Optional[TorchMemReading] = None
        self._reset = False

    def __enter__(self) -> "TorchPeakMemory":
        self.reading = None
        self._reset = False
        torch = _cuda_ready()
        if torch is not None:
            try:
                for d in range(torch.cuda.device_count()):
                    torch.cuda.reset_peak_memory_stats(d)
                self._reset = True
            except Exception:  # noqa: BLE001
                self._reset = False
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.reading = read_torch_peak_memory()
        return False


def read_torch_peak_memory() -> TorchMemReading:
    """Current peak counters summed over devices (None values when not applicable)."""
    torch = _cuda_ready()
    if torch is None:
        return TorchMemReading(None, None)
    try:
        n = torch.cuda.device_count()
        alloc = sum(int(torch.cuda.max_memory_allocated(d)) for d in range(n))
        reserved = sum(int(torch.cuda.max_memory_reserved(d)) for d in range(n))
        return TorchMemReading(alloc, reserved)
    except Exception:  # noqa: BLE001
        return TorchMemReading(None, None)


def torch_peak_memory() -> TorchPeakMemory:
    """``with torch_peak_memory() as t: ...`` then ``t.reading``."""
    return TorchPeakMemory()
