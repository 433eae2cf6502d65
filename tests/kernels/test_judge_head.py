"""judge_head: Triton path (compiled on CUDA, interpreter on CPU) vs reference vs
full-vocabulary logits. The parametrized tests take the `device` fixture: inputs are drawn on
the CPU and moved there, and results are compared on the CPU."""

from __future__ import annotations

import pytest
import torch
from _kernels_testutil import TOL, assert_close, assert_no_poison, make_cu

from costtax.kernels import JudgeHeadOutput, judge_head, judge_head_reference
from costtax.kernels.judge_head import _launch_config, split_policy

pytestmark = pytest.mark.integration

LENGTHS = {
    "B1_len1": [1],
    "ragged": [3, 1, 17, 5, 12],
    "B9": [13, 2, 9, 1, 6, 3, 11, 4, 7],
}
HIDDEN = [33, 96 + 5]
DTYPES = [torch.float32, torch.bfloat16]
V = 37
# None: one pass (the interpreter's default); 3: split-K over H (partials, then the finish
# kernel), 3 slices at both H=33 and H=101.
SPLITS = [None, 3]


def _inputs(lengths, H, dtype, device="cpu"):
    """Drawn on the CPU from the seeded generator, then moved: same values on any device."""
    cu = make_cu(lengths)
    hidden = torch.randn(int(cu[-1]), H).to(dtype)
    lm_head = (torch.randn(V, H) / H**0.5).to(dtype)
    return hidden.to(device), cu.to(device), lm_head.to(device)


def _naive(hidden, cu, lm_head, token_ids, mode, positions=None):
    """HF style: full-vocabulary logits at every position, then pick rows and columns (on
    the CPU)."""
    full = hidden.cpu().float() @ lm_head.cpu().float().T  # [T, V]
    rows = cu.cpu()[1:].long() - 1 if positions is None else positions.cpu().long()
    logits = full[rows][:, token_ids.cpu().long()]
    if mode == "diff":
        reward = logits[:, 0] - logits[:, 1]
    else:
        reward = logits[:, 0] - torch.logsumexp(logits, dim=-1)
    return logits, reward


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("lengths", list(LENGTHS.values()), ids=list(LENGTHS))
@pytest.mark.parametrize("mode,k", [("diff", 2), ("logsoftmax", 2), ("logsoftmax", 3), ("logsoftmax", 1)])
@pytest.mark.parametrize("split_h", SPLITS, ids=["onepass", "splitK"])
def test_matches_reference_and_naive(split_h, mode, k, lengths, H, dtype, seed, poison, auto_path, device):
    hidden, cu, lm_head = _inputs(lengths, H, dtype, device)
    token_ids = torch.randperm(V)[:k].to(device)
    out = judge_head(hidden, cu, lm_head, token_ids, mode=mode, split_h=split_h)
    assert isinstance(out, JudgeHeadOutput)
    assert out.logits.shape == (len(lengths), k) and out.reward.shape == (len(lengths),)
    assert out.logits.dtype == out.reward.dtype == torch.float32
    assert_no_poison(poison, device)
    ref = judge_head_reference(hidden, cu, lm_head, token_ids, mode=mode)
    assert_close(out.logits, ref.logits, dtype, f"{auto_path} logits vs reference")
    assert_close(out.reward, ref.reward, dtype, f"{auto_path} reward vs reference")
    nl, nr = _naive(hidden, cu, lm_head, token_ids, mode)
    assert_close(ref.logits, nl, dtype, "reference logits vs full-vocab")
    assert_close(ref.reward, nr, dtype, "reference reward vs full-vocab")


@pytest.mark.parametrize("path", ["kernel", "splitK", "reference"])
def test_touches_only_chosen_rows(path, seed, auto_path, device):
    """Every other vocabulary row is NaN: any read of it would poison the result."""
    hidden, cu, lm_head = _inputs([4, 1, 6], 33, torch.float32, device)
    token_ids = torch.tensor([11, 5], device=device)
    poisoned = torch.full_like(lm_head, float("nan"))
    poisoned[token_ids] = lm_head[token_ids]
    out = judge_head(
        hidden, cu, poisoned, token_ids, path="reference" if path == "reference" else None,
        split_h=3 if path == "splitK" else None,
    )
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.reward).all()
    nl, nr = _naive(hidden, cu, lm_head, token_ids, "diff")
    assert_close(out.logits, nl, torch.float32)
    assert_close(out.reward, nr, torch.float32)


@pytest.mark.parametrize("split_h", SPLITS, ids=["onepass", "splitK"])
def test_explicit_positions_and_repeated_tokens(split_h, seed, poison, auto_path, device):
    hidden, cu, lm_head = _inputs([5, 2, 9, 1], 101, torch.bfloat16, device)
    positions = torch.tensor([0, 16, 16, 3], device=device)
    token_ids = torch.tensor([4, 4, 30], dtype=torch.int32, device=device)  # a repeated id is legal
    out = judge_head(hidden, cu, lm_head, token_ids, positions=positions, mode="logsoftmax", split_h=split_h)
    assert_no_poison(poison, device)
    nl, nr = _naive(hidden, cu, lm_head, token_ids, "logsoftmax", positions)
    assert_close(out.logits, nl, torch.bfloat16)
    assert_close(out.reward, nr, torch.bfloat16)


def test_transposed_lm_head(seed, auto_path, device):
    """A column-major (non-contiguous) lm_head weight, as from a tied, transposed view."""
    hidden, cu, _ = _inputs([3, 8], 40, torch.float32, device)
    lm_head = torch.randn(40, V).to(device).T
    token_ids = torch.tensor([0, V - 1], device=device)
    out = judge_head(hidden, cu, lm_head, token_ids)
    nl, nr = _naive(hidden, cu, lm_head, token_ids, "diff")
    assert_close(out.logits, nl, torch.float32)
    assert_close(out.reward, nr, torch.float32)


@pytest.mark.parametrize("path", ["kernel", "splitK", "reference"])
def test_validate_false_gives_nan(path, seed, auto_path, device):
    hidden, cu, lm_head = _inputs([3, 0, 4], 33, torch.float32, device)
    p = "reference" if path == "reference" else None
    sp = 3 if path == "splitK" else None
    out = judge_head(hidden, cu, lm_head, torch.tensor([1, 2], device=device), validate=False, path=p, split_h=sp)
    assert torch.isnan(out.reward[1]) and torch.isnan(out.logits[1]).all()
    assert torch.isfinite(out.reward[[0, 2]]).all()
    out = judge_head(
        hidden, make_cu([3, 4], device=device), lm_head, torch.tensor([1, V], device=device), validate=False, path=p,
        split_h=sp,
    )
    assert torch.isnan(out.logits[:, 1]).all() and torch.isfinite(out.logits[:, 0]).all()
    assert torch.isnan(out.reward).all()


def _bad_cases():
    h = torch.randn(10, 33)
    w = torch.randn(V, 33)
    cu = make_cu([4, 6])
    t2 = torch.tensor([1, 2])
    return {
        "lm_head_1d": ((h, cu, torch.randn(33), t2), {}, "lm_head_weight must be a 2-D"),
        "lm_head_H": ((h, cu, torch.randn(V, 32), t2), {}, "with H=33"),
        "diff_k3": ((h, cu, w, torch.tensor([1, 2, 3])), {}, "mode='diff' needs exactly k=2"),
        "bad_mode": ((h, cu, w, t2), {"mode": "softmax"}, "mode must be one of"),
        "k0": ((h, cu, w, torch.tensor([], dtype=torch.long)), {"mode": "logsoftmax"}, "at least one token"),
        "k_too_big": ((h, cu, w, torch.zeros(300, dtype=torch.long)), {"mode": "logsoftmax"}, "k <= 256"),
        "token_range": ((h, cu, w, torch.tensor([1, V])), {}, r"token_ids must lie in \[0, 37\)"),
        "token_negative": ((h, cu, w, torch.tensor([-1, 3])), {}, "token_ids must lie in"),
        "token_2d": ((h, cu, w, t2[None]), {}, "token_ids must be 1-D"),
        "token_float": ((h, cu, w, t2.float()), {}, "token_ids must be int32 or int64"),
        "empty_seq": ((h, torch.tensor([0, 4, 4, 10]), w, t2), {}, "empty"),
        "positions_len": ((h, cu, w, t2), {"positions": torch.tensor([0, 1, 2])}, "positions must have B=2"),
        "cu_2d": ((h, cu[None], w, t2), {}, "cu_seqlens must be 1-D"),
        "split_zero": ((h, cu, w, t2), {"split_h": 0}, "split_h must be None or an int >= 1"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_errors(case):
    args, kwargs, match = _bad_cases()[case]
    with pytest.raises(ValueError, match=match):
        judge_head(*args, **kwargs)


@pytest.mark.parametrize("H,split,expect", [(33, 3, 3), (101, 3, 3), (300, 4, 4), (300, 5, 5), (33, None, 1), (16, 5, 1)])
def test_interpreter_split_config(H, split, expect):
    """The split the parametrized tests ask for really runs as that many H slices, which
    together cover H exactly once (whole tiles)."""
    block_b, block_k, block_h, warps, per, n_split, grid, finish = _launch_config(9, 2, H, True, split, 1)
    assert n_split == expect and grid == (2, n_split) and finish == (2,)
    assert per % 16 == 0 and per * (n_split - 1) < H <= per * n_split


@pytest.mark.parametrize(
    "B,H,n_sm,expect",
    [
        (16, 4096, 132, 1),  # below SPLIT_MIN_B: one launch (9.8 us measured, fine)
        (64, 4096, 132, 4),  # 32 tiles on 132 SMs: 2 waves' worth, capped at H/1024 slices
        (256, 4096, 132, 3),  # 128 tiles: ceil(264/128)
        (1024, 4096, 132, 1),  # 512 tiles >= SMs: one pass
        (64, 576, 132, 1),  # H too small to slice
        (64, 2048, 132, 2),
    ],
)
def test_split_policy(B, H, n_sm, expect):
    block_b, block_k, block_h, *_ = _launch_config(B, 2, H, False, 1, n_sm)
    assert split_policy(B, H, block_b, block_h, n_sm) == expect
    assert _launch_config(B, 2, H, False, None, n_sm)[5] == expect


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode,k", [("diff", 2), ("logsoftmax", 5)])
@pytest.mark.parametrize("split_h", [None, 1, 4])
def test_cuda_matches_reference(split_h, mode, k, dtype, seed, poison):
    H, vocab = 2048 + 3, 32000
    cu = make_cu([1, 17, 300, 5] * 9).cuda()
    hidden = torch.randn(int(cu[-1]), H, device="cuda").to(dtype)
    lm_head = (torch.randn(vocab, H, device="cuda") / H**0.5).to(dtype)
    token_ids = torch.randperm(vocab, device="cuda")[:k]
    out = judge_head(hidden, cu, lm_head, token_ids, mode=mode, split_h=split_h)
    assert_no_poison(poison)
    ref = judge_head_reference(hidden, cu, lm_head, token_ids, mode=mode)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.logits, ref.logits, atol=atol * 10, rtol=rtol)
    torch.testing.assert_close(out.reward, ref.reward, atol=atol * 10, rtol=rtol)
