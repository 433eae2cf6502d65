"""Helpers shared by the costtax.kernels tests (imported as a sibling module)."""

from __future__ import annotations

import torch

# (atol, rtol) per input dtype. Kernel and reference both accumulate in fp32 from the same
# input values, so they differ only by summation order; bf16/fp16 get looser bounds anyway
# because the naive comparisons round differently (e.g. a bf16 matmul on CUDA).
TOL = {
    torch.float32: (2e-5, 1e-5),
    torch.bfloat16: (1e-3, 1e-3),
    torch.float16: (1e-3, 1e-3),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, equal_nan=False, msg=lambda m: f"{what}: {m}")


def make_cu(lengths: list[int], dtype: torch.dtype = torch.int32) -> torch.Tensor:
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=dtype)


def assert_no_poison(buffers: list[torch.Tensor]) -> None:
    assert buffers, "the kernel path allocated no output (did it run?)"
    for t in buffers:
        if t.dtype.is_floating_point:
            assert not torch.isnan(t).any(), "an output element was never written (NaN poison left)"
        else:
            assert not (t == -7777).any(), "an output element was never written (poison left)"
