"""Fixtures for the costtax.kernels tests (Triton interpreter on CPU, compiled on CUDA)."""

from __future__ import annotations

import os
import zlib

import pytest
import torch

from costtax.kernels import _dispatch

@pytest.fixture
def seed(request) -> int:
    """A fresh, reproducible seed per test case (from its node id); seeds torch too."""
    s = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(s)
    return s


@pytest.fixture
def poison(monkeypatch):
    """Make every kernel output buffer start as NaN (ints: -7777) and record them, so a
    test can check that the kernel wrote every element. The buffer is allocated by the real
    ``empty_out`` on the device the op asks for (the inputs' device, CUDA included) and
    filled in place there; ``assert_no_poison(..., device=...)`` checks that device."""
    made: list[torch.Tensor] = []
    real = _dispatch.empty_out

    def poisoned(shape, dtype, device):
        t = real(shape, dtype, device)
        t.fill_(float("nan") if dtype.is_floating_point else -7777)
        made.append(t)
        return t

    monkeypatch.setattr(_dispatch, "empty_out", poisoned)
    return made


def kernel_test_device() -> str:
    """Where the parametrized kernel tests put their tensors: ``"cuda"`` (compiled Triton)
    when CUDA is available and the interpreter is not forced, else ``"cpu"`` (the Triton
    interpreter, which tests/conftest.py switches on when CUDA is absent)."""
    if os.environ.get("TRITON_INTERPRET") != "1" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


@pytest.fixture
def device() -> str:
    """The device the kernel tests build their inputs on (see :func:`kernel_test_device`).
    Inputs are drawn on the CPU from the seeded generator and then moved, so a test case
    sees the same values on either device."""
    return kernel_test_device()


@pytest.fixture
def auto_path(device) -> str:
    """The path an op picks for tensors on ``device``; skip when that is plain torch, since
    then there is no kernel to compare."""
    p = _dispatch.kernel_path(torch.empty(0, device=device))
    if p == "reference":
        why = "triton is not importable" if not _dispatch.triton_importable() else "TRITON_INTERPRET is not 1"
        pytest.skip(f"no Triton path for {device} tensors on this machine ({why})")
    return p
