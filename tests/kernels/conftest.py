"""Fixtures for the costtax.kernels tests (Triton interpreter on CPU, compiled on CUDA)."""

from __future__ import annotations

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
    test can check that the kernel wrote every element."""
    made: list[torch.Tensor] = []
    real = _dispatch.empty_out

    def poisoned(shape, dtype, device):
        t = real(shape, dtype, device)
        t.fill_(float("nan") if dtype.is_floating_point else -7777)
        made.append(t)
        return t

    monkeypatch.setattr(_dispatch, "empty_out", poisoned)
    return made


@pytest.fixture
def auto_path() -> str:
    """The path an op picks for CPU tensors here; skip when that is plain torch (no triton
    and no interpreter), since then there is no kernel to compare."""
    p = _dispatch.kernel_path(torch.empty(0))
    if p == "reference":
        pytest.skip("no Triton path on this machine (triton missing or TRITON_INTERPRET unset)")
    return p
