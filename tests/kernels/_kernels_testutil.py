"""Helpers shared by the costtax.kernels tests (imported as a sibling module)."""

from __future__ import annotations

import torch

# (atol, rtol) per input dtype, the same on CUDA (compiled Triton) and on the CPU
# (interpreter). Kernel and reference both upcast the same input values to fp32 and
# accumulate in fp32, on whichever device, so they differ only by summation order; bf16/fp16
# get looser bounds anyway because the naive comparisons round differently.
TOL = {
    torch.float32: (2e-5, 1e-5),
    torch.bfloat16: (1e-3, 1e-3),
    torch.float16: (1e-3, 1e-3),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    """Compare on the CPU (either side may live on CUDA)."""
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(
        actual.float().cpu(), expected.float().cpu(), atol=atol, rtol=rtol, equal_nan=False, msg=lambda m: f"{what}: {m}"
    )


def make_cu(lengths: list[int], dtype: torch.dtype = torch.int32, device: str | torch.device = "cpu") -> torch.Tensor:
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=dtype).to(device)


def assert_no_poison(buffers: list[torch.Tensor], device: str | torch.device | None = None) -> None:
    """Every poisoned output buffer was fully written (and, given ``device``, lives there:
    the kernel ran on the device the test meant)."""
    assert buffers, "the kernel path allocated no output (did it run?)"
    for t in buffers:
        if device is not None:
            assert t.device.type == torch.device(device).type, f"output allocated on {t.device}, expected {device}"
        if t.dtype.is_floating_point:
            assert not torch.isnan(t).any(), "an output element was never written (NaN poison left)"
        else:
            assert not (t == -7777).any(), "an output element was never written (poison left)"
