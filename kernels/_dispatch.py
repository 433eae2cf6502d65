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


def kernel_dtype_ok(*tensors: Any) -> bool:
    """True when every floating tensor given has a dtype the Triton kernels read."""
    for t in tensors:
        if _is_tensor(t) and t.is_floating_point():
            if str(t.dtype).replace("torch.", "") not in _KERNEL_FLOAT_DTYPES:
                return False
    return True


def resolve_kernel(kernel: Any, path: str) -> Any:
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


def next_pow2(n: int) -> int:
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def empty_out(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """Allocate an output buffer. Every op allocates through this one function, so tests
    can monkeypatch it to fill outputs with NaN and check that the kernels write every
    element."""
    import torch

    return torch.empty(shape, dtype=dtype, device=device)
