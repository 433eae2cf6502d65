"""reward_head: Triton path (compiled on CUDA, interpreter on CPU) vs reference vs an
independent naive head. The parametrized tests take the `device` fixture: inputs are drawn on
the CPU and moved there, and results are compared on the CPU."""

from __future__ import annotations

import pytest
import torch
from _kernels_testutil import TOL, assert_close, assert_no_poison, make_cu

from costtax.kernels import reward_head, reward_head_reference

pytestmark = pytest.mark.integration

# B=1 with length 1, length-1 sequences in a batch, non-powers of two, and B=9/11 (more than
# one program in the interpreter's 8-sequence tile, masked tail).
LENGTHS = {
    "B1_len1": [1],
    "B1_len7": [7],
    "ones": [1, 1, 1],
    "ragged": [3, 1, 17, 5, 12],
    "B9": [13, 2, 9, 1, 6, 3, 11, 4, 7],
    "B11_longish": [40, 1, 3, 29, 2, 8, 19, 5, 1, 23, 6],
}
HIDDEN = [33, 101, 300]  # not multiples of the H tile (16..64 in the interpreter)
DTYPES = [torch.float32, torch.bfloat16]


def _inputs(lengths, H, dtype, cu_dtype=torch.int32, device="cpu"):
    """Drawn on the CPU from the seeded generator, then moved: same values on any device."""
    cu = make_cu(lengths, cu_dtype)
    T = int(cu[-1])
    hidden = torch.randn(T, H).to(dtype)
    weight = (torch.randn(H) / H**0.5).to(dtype)
    return hidden.to(device), cu.to(device), weight.to(device)


def _naive(hidden, cu, weight, bias=0.0, positions=None):
    """HF style: head on every position, then gather the score rows (on the CPU)."""
    every = hidden.cpu().float() @ weight.cpu().float() + float(bias)
    rows = cu.cpu()[1:].long() - 1 if positions is None else positions.cpu().long()
    return every[rows]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("lengths", list(LENGTHS.values()), ids=list(LENGTHS))
def test_matches_reference_and_naive(lengths, H, dtype, seed, poison, auto_path, device):
    hidden, cu, weight = _inputs(lengths, H, dtype, torch.int32 if seed % 2 else torch.int64, device)
    bias = [None, 0.375, torch.tensor(-1.25, device=device)][seed % 3]
    out = reward_head(hidden, cu, weight, bias)
    assert out.shape == (len(lengths),) and out.dtype == torch.float32
    assert_no_poison(poison, device)
    ref = reward_head_reference(hidden, cu, weight, bias)
    assert_close(out, ref, dtype, f"{auto_path} vs reference")
    b = 0.0 if bias is None else float(bias)
    assert_close(ref, _naive(hidden, cu, weight, b), dtype, "reference vs naive")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_explicit_positions(dtype, seed, poison, auto_path, device):
    lengths = [5, 1, 9, 4, 3, 7, 2, 6, 8, 1]
    hidden, cu, weight = _inputs(lengths, 96 + 5, dtype, device=device)
    T = hidden.shape[0]
    # Any rows, including rows of other sequences, repeats, the first and the last row.
    positions = torch.randint(0, T, (len(lengths),))
    positions[0], positions[-1] = 0, T - 1
    positions[3] = positions[2]
    positions = positions.to(device)
    out = reward_head(hidden, cu, weight, 0.5, positions=positions)
    assert_no_poison(poison, device)
    ref = reward_head_reference(hidden, cu, weight, 0.5, positions=positions)
    assert_close(out, ref, dtype, "kernel vs reference")
    assert_close(ref, _naive(hidden, cu, weight, 0.5, positions), dtype, "reference vs naive")


def test_positions_allow_empty_sequences(seed, auto_path, device):
    """With explicit positions an empty sequence is fine: the row is given."""
    hidden, cu, weight = _inputs([3, 0, 4], 33, torch.float32, device=device)
    positions = torch.tensor([0, 2, 6], device=device)
    out = reward_head(hidden, cu, weight, positions=positions)
    assert_close(out, _naive(hidden, cu, weight, 0.0, positions), torch.float32)


def test_strided_hidden_and_linear_weight(seed, auto_path, device):
    """Non-contiguous hidden (a column slice) and nn.Linear(H, 1) weight/bias shapes."""
    big = torch.randn(21, 80)
    cu = make_cu([4, 9, 1, 7])
    lin = torch.nn.Linear(65, 1)
    with torch.no_grad():
        expect = lin(big[:, 7:7 + 65])[cu[1:].long() - 1, 0]  # on the CPU
        lin.to(device)  # parameters (still nn.Parameter) move in place
        hidden = big.to(device)[:, 7:7 + 65]  # stride (80, 1), not contiguous
        out = reward_head(hidden, cu.to(device), lin.weight, lin.bias)
    assert_close(out, expect, torch.float32)
    cu = cu.to(device)
    # Column-strided hidden (transposed storage).
    ht = torch.randn(65, 21).to(device).T
    assert_close(reward_head(ht, cu, lin.weight.detach()[0]), reward_head_reference(ht, cu, lin.weight.detach()[0]), torch.float32)


def test_empty_batch(auto_path, device):
    out = reward_head(
        torch.randn(0, 33).to(device), torch.zeros(1, dtype=torch.int32).to(device), torch.randn(33).to(device)
    )
    assert out.shape == (0,) and out.device.type == torch.device(device).type


def test_trailing_padding_rows_allowed(seed, auto_path, device):
    hidden, cu, weight = _inputs([3, 5], 40, torch.float32, device=device)
    padded = torch.cat([hidden, torch.full((4, 40), float("nan"), device=device)])
    assert_close(reward_head(padded, cu, weight), _naive(hidden, cu, weight), torch.float32)


@pytest.mark.parametrize("path", ["kernel", "reference"])
def test_validate_false_gives_nan_not_oob(path, seed, auto_path, device):
    """validate=False skips the value checks; bad score rows become NaN on both paths."""
    hidden, cu, weight = _inputs([3, 0, 4], 33, torch.float32, device=device)  # sequence 1 is empty
    p = None if path == "kernel" else "reference"
    out = reward_head(hidden, cu, weight, validate=False, path=p)
    assert torch.isnan(out[1]) and not torch.isnan(out[[0, 2]]).any()
    assert_close(out[[0, 2]], _naive(hidden, cu, weight)[[0, 2]], torch.float32)
    positions = torch.tensor([-1, 2, 7], device=device)  # -1 and 7 (= T) are out of range
    out = reward_head(hidden, cu, weight, positions=positions, validate=False, path=p)
    assert torch.isnan(out[[0, 2]]).all() and not torch.isnan(out[1])


def _bad_cases():
    h = torch.randn(10, 33)
    w = torch.randn(33)
    cu = make_cu([4, 6])
    return {
        "weight_size": ((h, cu, torch.randn(32)), {}, "weight must have shape"),
        "weight_2d": ((h, cu, torch.randn(2, 33)), {}, "weight must have shape"),
        "hidden_1d": ((torch.randn(33), cu, w), {}, "hidden must be 2-D"),
        "hidden_int": ((torch.ones(10, 33, dtype=torch.int64), cu, w), {}, "hidden must be a floating"),
        "cu_2d": ((h, cu[None, :], w), {}, "cu_seqlens must be 1-D"),
        "cu_float": ((h, cu.float(), w), {}, "cu_seqlens must be int32 or int64"),
        "cu_start": ((h, torch.tensor([1, 4, 10]), w), {}, "must start at 0"),
        "cu_decreasing": ((h, torch.tensor([0, 6, 4]), w), {}, "non-decreasing"),
        "cu_past_T": ((h, torch.tensor([0, 4, 11]), w), {}, "exceeds the number of hidden rows"),
        "empty_seq": ((h, torch.tensor([0, 4, 4, 10]), w), {}, "empty"),
        "positions_len": ((h, cu, w), {"positions": torch.tensor([1])}, "positions must have B=2"),
        "positions_range": ((h, cu, w), {"positions": torch.tensor([1, 10])}, r"positions must lie in \[0, 10\)"),
        "positions_float": ((h, cu, w), {"positions": torch.tensor([1.0, 2.0])}, "positions must be int32 or int64"),
        "bias_vector": ((h, cu, w), {"bias": torch.ones(2)}, "bias must be a scalar"),
        "bias_str": ((h, cu, w), {"bias": "1"}, "bias must be a float"),
        "bad_path": ((h, cu, w), {"path": "cuda"}, "path must be None or one of"),
        "triton_on_cpu": ((h, cu, w), {"path": "triton"}, "needs CUDA tensors|needs triton"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_errors(case):
    args, kwargs, match = _bad_cases()[case]
    with pytest.raises(ValueError, match=match):
        reward_head(*args, **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("H", [33, 576, 4096 + 5])
def test_cuda_matches_reference(H, dtype, seed, poison):
    lengths = [1, 17, 300, 5] * 9
    hidden, cu, weight = (t.cuda() for t in _inputs(lengths, H, dtype))
    out = reward_head(hidden, cu, weight, torch.tensor(0.25, device="cuda"))
    assert_no_poison(poison)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out, reward_head_reference(hidden, cu, weight, 0.25), atol=atol * 10, rtol=rtol)
    positions = torch.randint(0, hidden.shape[0], (len(lengths),), device="cuda")
    out = reward_head(hidden, cu, weight, positions=positions, validate=False)
    torch.testing.assert_close(out, reward_head_reference(hidden, cu, weight, positions=positions), atol=atol * 10, rtol=rtol)
