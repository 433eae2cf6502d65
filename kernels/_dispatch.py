"""Choose where a kernel call runs: compiled Triton, the Triton interpreter, or plain torch.

The choice is made at call time from the tensors and the environment:

* ``"triton-interpret"`` -- ``os.environ["TRITON_INTERPRET"] == "1"`` and ``triton`` imports:
  the Triton interpreter runs the kernels (on CPU tensors; it also accepts CUDA tensors,
  which it copies, because with that variable set triton is in interpreter mode
  process-wide);
* ``"triton"``           -- otherwise, when every tensor is on a CUDA device and ``triton``
  imports: the compiled kernels;
* ``"reference"``        -- otherwise: the plain-torch reference implementation.

The library never sets ``TRITON_INTERPRET`` itself. Triton fixes interpreted-vs-compiled
when it is first imported, so the variable must be set before that (tests/conftest.py does
it on machines without CUDA); :func:`resolve_kernel` reports a mismatch clearly.

Nothing here imports triton or torch at module import time.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

PATHS = ("triton", "triton-interpret", "reference")

# Element dtypes the Triton kernels read (they accumulate in fp32 whatever the input).
_KERNEL_FLOAT_DTYPES = ("float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    """True when ``import triton`` works (checked once, lazily)."""
    try:
        if importlib.util.find_spec("triton") is None:
            return False
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken install counts as absent
        return False
    return True


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "is_cuda")


def kernel_path(*tensors: Any) -> str:
    """Return ``"triton"``, ``"triton-interpret"`` or ``"reference"`` for these tensors.

    Non-tensor arguments (``None``, floats) are ignored. With no tensor at all the device
    condition for ``"triton"`` is not met.
    """
    ts = [t for t in tensors if _is_tensor(t)]
    if not triton_importable():
        return "reference"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "triton-interpret"
    if ts and all(t.is_cuda for t in ts):
        return "triton"
    return "reference"


def choose_path(path: str | None, *tensors: Any, dtype_ok: bool = True) -> str:
    """Resolve the ``path=`` argument of a public op.

    ``None`` picks :func:`kernel_path` (falling back to ``"reference"`` when the element
    dtype is one the kernels do not read); an explicit path is checked and honoured.
    """
    if path is None:
        chosen = kernel_path(*tensors)
        if chosen != "reference" and not dtype_ok:
            return "reference"
        return chosen
    if path not in PATHS:
        raise ValueError(f"path must be None or one of {PATHS}, got {path!r}")
    if path == "reference":
        return path
    if not triton_importable():
        raise ValueError(f"path={path!r} needs triton, which is not importable")
    if not dtype_ok:
        raise ValueError(
            f"path={path!r}: the Triton kernels read only {_KERNEL_FLOAT_DTYPES}; "
            "use path='reference' for other dtypes"
        )
    ts = [t for t in tensors if _is_tensor(t)]
    if path == "triton" and not (ts and all(t.is_cuda for t in ts)):
        raise ValueError("path='triton' needs CUDA tensors; use 'triton-interpret' or 'reference' on CPU")
    return path


@functools.lru_cache(maxsize=1)
def _kernel_dtypes() -> frozenset:
    import torch

    return frozenset(getattr(torch, name) for name in _KERNEL_FLOAT_DTYPES)


def kernel_dtype_ok(*tensors: Any) -> bool:
    """True when every floating tensor given has a dtype the Triton kernels read."""
    ok = _kernel_dtypes()
    for t in tensors:
        if _is_tensor(t) and t.is_floating_point() and t.dtype not in ok:
            return False
    return True


def auto_path(is_cuda: bool, dtype_ok: bool) -> str:
    """:func:`choose_path` for ``path=None`` from two facts the op already knows (all its
    tensors on CUDA; dtypes readable): no per-tensor work, one environment lookup. This is
    the per-call hot path; :func:`kernel_path` stays the public, general form."""
    if not triton_importable():
        return "reference"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "triton-interpret" if dtype_ok else "reference"
    return "triton" if (is_cuda and dtype_ok) else "reference"


_RESOLVED: dict[tuple[int, str], Any] = {}


def resolve_kernel(kernel: Any, path: str) -> Any:
    """Cached :func:`check_kernel` (one dict lookup per call once a kernel has run)."""
    key = (id(kernel), path)
    hit = _RESOLVED.get(key)
    if hit is not None:
        return hit
    _RESOLVED[key] = out = check_kernel(kernel, path)
    return out


def check_kernel(kernel: Any, path: str) -> Any:
    """Return ``kernel`` after checking it can run on ``path``.

    Triton fixes compiled-vs-interpreted when ``triton`` is imported (its own library
    functions are wrapped then) and when the ``@triton.jit`` decorator runs. A kernel made
    in one mode cannot be launched in the other, so a mismatch is reported clearly instead
    of failing deep inside triton.
    """
    from triton.runtime.interpreter import InterpretedFunction

    is_interp = isinstance(kernel, InterpretedFunction)
    if path == "triton-interpret" and not is_interp:
        raise RuntimeError(
            "path 'triton-interpret' needs TRITON_INTERPRET=1 in the environment before "
            "triton is first imported (triton was imported in compiled mode)"
        )
    if path == "triton" and is_interp:
        raise RuntimeError(
            "path 'triton' (compiled) is unavailable: triton was imported with "
            "TRITON_INTERPRET=1; use path='triton-interpret' or 'reference'"
        )
    return kernel


@functools.lru_cache(maxsize=16)
def cuda_card(index: int) -> str | None:
    """``torch.cuda.get_device_name(index)``, cached (the crossover table is per card);
    None for a CPU tensor's index (-1)."""
    if index < 0:
        return None
    import torch

    return torch.cuda.get_device_name(index)


def next_pow2(n: int) -> int:
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def empty_out(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """Allocate an output buffer. Every op allocates through this one function, so tests
    can monkeypatch it to fill outputs with NaN and check that the kernels write every
    element."""
    import torch

    return torch.empty(shape, dtype=dtype, device=device)
