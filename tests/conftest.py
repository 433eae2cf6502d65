# --- costtax.kernels: Triton interpreter on machines without CUDA --------------------------
# Triton fixes compiled-vs-interpreted when it is first imported, so this must run before
# anything imports triton. Without CUDA, the kernel tests run the Triton interpreter on CPU
# tensors (an explicit TRITON_INTERPRET in the environment wins). Keep this block first.
import os as _os


def _costtax_cuda_available() -> bool:
    try:
        import torch
    except Exception:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


if not _costtax_cuda_available():
    _os.environ.setdefault("TRITON_INTERPRET", "1")
# --- end costtax.kernels block --------------------------------------------------------------
