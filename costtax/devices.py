"""One device and dtype policy for everything costtax loads itself (the HF engine, the reward
models): CUDA when present, bf16 only where the device supports it, fp32 otherwise (the AVX2 CPUs
we run on have no bf16 units: bf16 there is emulated and slow). torch is imported by the caller's
functions only; this module imports it lazily too."""
from __future__ import annotations

from typing import Any


def cuda_available() -> bool:
    """Whether torch sees a CUDA device; False where torch is missing or broken."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def pick_device_dtype(device_name: str | None = None, dtype_name: str | None = None) -> tuple[str, Any]:
    """(device, torch dtype): explicit names win; else cuda + bf16 (when supported) or cpu + fp32."""
    import torch

    device = device_name or ("cuda" if cuda_available() else "cpu")
    if dtype_name:
        return device, getattr(torch, dtype_name)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return device, torch.bfloat16
    return device, torch.float32


def self_check_tol(dtype) -> float:
    """Tolerance of the reward models' load-time self-checks (cached or fused path vs the plain
    forward pass), relative to max(1, |reward|): fp32 1e-3, half precisions 5e-2."""
    import torch

    return 1e-3 if dtype == torch.float32 else 5e-2
