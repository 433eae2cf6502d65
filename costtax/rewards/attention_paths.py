"""Which attention implementation and which kernel path a transformers reward model runs with:
flash-attn where packing needs it, the costtax.kernels path of the score heads, and the path of
the prefix attention inside a model forward. torch and transformers are imported lazily."""
from __future__ import annotations

from typing import Any, Sequence


def attn_implementation(device: str, batching: str) -> str:
    """flash_attention_2 on CUDA when it is installed and batching may pack (packing without it
    builds a T x T mask), else sdpa."""
    if device.startswith("cuda") and batching in ("auto", "packed"):
        try:
            from transformers.utils import is_flash_attn_2_available

            if is_flash_attn_2_available():
                return "flash_attention_2"
        except Exception:
            pass
    return "sdpa"


def head_kernel_path(preference: str | None, hidden: Any, head_tensors: Sequence[Any]) -> str:
    """The kernel path of the score head over ``hidden`` and the head's own tensors
    (``preference`` wins when given; else costtax.kernels' dispatch by device and dtype)."""
    from costtax.kernels._dispatch import choose_path, kernel_dtype_ok

    ts = (hidden, *head_tensors)
    return choose_path(preference, *ts, dtype_ok=kernel_dtype_ok(*ts))


def prefix_attention_path(preference: str | None, device: str) -> str | None:
    """Kernel path of the prefix attention inside the model's forward pass. The Triton
    interpreter (tests on a CPU) is for checking kernels (tests/kernels does, on small
    shapes); a model forward through it costs ~2 ms per program x heads x layers, minutes
    per group, so there the torch reference runs instead. CUDA: the compiled kernel."""
    if preference is not None:
        return preference
    import torch

    from costtax.kernels._dispatch import kernel_path

    return "reference" if kernel_path(torch.empty(0, device=device)) == "triton-interpret" else None
