"""k-row judge head: score a packed batch with an LM judge's logits on k chosen tokens.

A judge prompt ends with e.g. "Answer Yes or No:"; the judgement is the logit of a few
vocabulary tokens at the last position. The naive HF path computes full-vocabulary logits
(``hidden @ lm_head.T``, often at every position) and then picks two columns. This kernel
gathers each sequence's score row and projects it only onto the ``k`` chosen rows of the
LM head: it reads B*H + k*H elements and never touches the other V-k rows.

    logits[b, j] = hidden[pos[b]] . lm_head_weight[token_ids[j]]
    mode "diff":       reward[b] = logits[b, 0] - logits[b, 1]            (k must be 2)
    mode "logsoftmax": reward[b] = log_softmax(logits[b, :])[0]           (softmax over the k)
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _dispatch
from ._dispatch import choose_path, kernel_dtype_ok, next_pow2, resolve_kernel
from ._validate import check_cu_seqlens_values, check_index_range, hidden_matrix, index_vector
from .reward_head import _score_rows

try:  # guarded: importing costtax.kernels must work without triton
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover
    triton = None
    tl = None

MODES = ("diff", "logsoftmax")
MAX_K = 256  # beyond this a tiled matmul over the vocabulary is the better tool


class JudgeHeadOutput(NamedTuple):
    logits: torch.Tensor  # [B, k] float32
    reward: torch.Tensor  # [B] float32


if triton is not None:

    @triton.jit
    def _judge_head_kernel(
        hidden_ptr,
        w_ptr,
        tok_ptr,
        cu_ptr,
        pos_ptr,
        logits_ptr,
        reward_ptr,
        B,
        T,
        H,
        V,
        K,
        stride_ht,
        stride_hh,
        stride_wv,
        stride_wh,
        HAS_POS: tl.constexpr,
        MODE: tl.constexpr,  # 0: diff, 1: logsoftmax
        BLOCK_B: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_H: tl.constexpr,
    ):
        pid = tl.program_id(0)
        b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
        b_mask = b < B
        if HAS_POS:
            pos = tl.load(pos_ptr + b, mask=b_mask, other=0).to(tl.int64)
            valid = b_mask & (pos >= 0) & (pos < T)
        else:
            start = tl.load(cu_ptr + b, mask=b_mask, other=0).to(tl.int64)
            end = tl.load(cu_ptr + b + 1, mask=b_mask, other=0).to(tl.int64)
            pos = end - 1
            valid = b_mask & (end > start) & (pos >= 0) & (pos < T)
        row_off = tl.where(valid, pos, 0) * stride_ht

        kk = tl.arange(0, BLOCK_K)
        k_mask = kk < K
        tok = tl.load(tok_ptr + kk, mask=k_mask, other=0).to(tl.int64)
        tok_ok = k_mask & (tok >= 0) & (tok < V)
        w_off = tl.where(tok_ok, tok, 0) * stride_wv

        # Broadcast-multiply and reduce (no tl.dot: k and B-tiles are tiny, and the
        # interpreter mis-computes tl.dot on bf16).
        acc = tl.zeros([BLOCK_B, BLOCK_K, BLOCK_H], dtype=tl.float32)
        for h0 in range(0, H, BLOCK_H):
            offs = h0 + tl.arange(0, BLOCK_H)
            h_mask = offs < H
            x = tl.load(
                hidden_ptr + row_off[:, None] + offs[None, :] * stride_hh,
                mask=valid[:, None] & h_mask[None, :],
                other=0.0,
            ).to(tl.float32)
            w = tl.load(
                w_ptr + w_off[:, None] + offs[None, :] * stride_wh,
                mask=tok_ok[:, None] & h_mask[None, :],
                other=0.0,
            ).to(tl.float32)
            acc += x[:, None, :] * w[None, :, :]
        logits = tl.sum(acc, axis=2)
        ok = valid[:, None] & tok_ok[None, :]
        logits = tl.where(ok, logits, float("nan"))
        tl.store(
            logits_ptr + b[:, None] * K + kk[None, :],
            logits,
            mask=b_mask[:, None] & k_mask[None, :],
        )

        # The reward is computed on finite stand-ins; a row with any invalid (NaN) logit
        # gets NaN at the end.
        safe = tl.where(ok, logits, 0.0)
        first = tl.sum(tl.where(kk[None, :] == 0, safe, 0.0), axis=1)
        if MODE == 0:
            second = tl.sum(tl.where(kk[None, :] == 1, safe, 0.0), axis=1)
            reward = first - second
        else:
            m = tl.max(tl.where(k_mask[None, :], safe, float("-inf")), axis=1)
            e = tl.where(k_mask[None, :], tl.exp(safe - m[:, None]), 0.0)
            reward = first - m - tl.log(tl.sum(e, axis=1))
        n_bad = tl.sum(tl.where(k_mask[None, :], 1 - tl.where(ok, 1, 0), 0), axis=1)
        bad = n_bad > 0
        reward = tl.where(bad, float("nan"), reward)
        tl.store(reward_ptr + b, reward, mask=b_mask)

else:  # pragma: no cover
    _judge_head_kernel = None


def _launch_config(B: int, K: int, H: int, interpret: bool) -> tuple[int, int, int, int]:
    """(BLOCK_B, BLOCK_K, BLOCK_H, num_warps); on GPU the 3-D fp32 accumulator stays at
    <= 4096 elements (32 registers per thread with 4 warps) while k <= 128."""
    block_k = max(next_pow2(K), 2)
    if interpret:
        return min(next_pow2(B), 8), block_k, min(max(next_pow2(H), 16), 64), 1
    block_b = 2
    block_h = min(max(next_pow2(H), 16), max(16, 4096 // (block_b * block_k)))
    return block_b, block_k, block_h, 4


def _check_mode(mode: str, k: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "diff" and k != 2:
        raise ValueError(f"mode='diff' needs exactly k=2 token_ids (reward = logit0 - logit1), got k={k}")
    if k < 1:
        raise ValueError("token_ids must hold at least one token id")


def _reward_from_logits(logits: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "diff":
        return logits[:, 0] - logits[:, 1]
    return torch.log_softmax(logits, dim=-1)[:, 0]


def judge_head_reference(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    lm_head_weight: torch.Tensor,
    token_ids: torch.Tensor,
    positions: torch.Tensor | None = None,
    mode: str = "diff",
) -> JudgeHeadOutput:
    """Plain torch, same semantics as the kernel: gather the score rows and the k weight
    rows (index_select; other vocabulary rows are not read), fp32 matmul, then the reward."""
    _check_mode(mode, int(token_ids.shape[0]))
    T, H = hidden.shape
    V = lm_head_weight.shape[0]
    dev = hidden.device
    cu = cu_seqlens.to(dev)
    if positions is not None:
        positions = positions.to(dev)
    pos, valid = _score_rows(cu, positions, T)
    tok = token_ids.to(dev).long()
    tok_ok = (tok >= 0) & (tok < V)
    B, K = pos.shape[0], tok.shape[0]
    if T == 0:
        logits = torch.full((B, K), float("nan"), dtype=torch.float32, device=dev)
    else:
        rows = hidden.index_select(0, torch.where(valid, pos, torch.zeros_like(pos))).float()
        w = lm_head_weight.index_select(0, torch.where(tok_ok, tok, torch.zeros_like(tok))).float()
        logits = rows @ w.T
        ok = valid[:, None] & tok_ok[None, :]
        logits = torch.where(ok, logits, torch.full_like(logits, float("nan")))
    return JudgeHeadOutput(logits, _reward_from_logits(logits, mode))


def judge_head(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    lm_head_weight: torch.Tensor,
    token_ids: torch.Tensor,
    positions: torch.Tensor | None = None,
    mode: str = "diff",
    path: str | None = None,
    *,
    validate: bool = True,
) -> JudgeHeadOutput:
    """Judge logits on ``k`` chosen tokens at each sequence's score row.

    Args:
        hidden: ``[T, H]`` fp32/bf16/fp16 packed hidden states (after the final norm).
        cu_seqlens: ``[B+1]`` int32/int64 cumulative lengths (``cu_seqlens[-1] <= T``).
        lm_head_weight: ``[V, H]`` LM head (or tied embedding) weight.
        token_ids: ``[k]`` int vocabulary ids, ``1 <= k <= 256``; for ``mode="diff"``
            ``k == 2`` and the reward is ``logit(token_ids[0]) - logit(token_ids[1])``.
        positions: optional ``[B]`` absolute score rows; default the last token.
        mode: ``"diff"`` or ``"logsoftmax"`` (log-probability of ``token_ids[0]`` under a
            softmax restricted to the k tokens).
        path: ``None`` (auto), ``"triton"``, ``"triton-interpret"`` or ``"reference"``.
        validate: check index *values* (one device->host copy on CUDA); without it an
            invalid row or token id gives NaN, never an out-of-bounds read.

    Returns:
        ``JudgeHeadOutput(logits [B, k] float32, reward [B] float32)``.
    """
    hidden = hidden_matrix(hidden)
    T, H = hidden.shape
    cu = index_vector(cu_seqlens, "cu_seqlens", device=hidden.device)
    if cu.shape[0] < 1:
        raise ValueError("cu_seqlens must have B+1 >= 1 entries")
    B = cu.shape[0] - 1
    if not isinstance(lm_head_weight, torch.Tensor) or lm_head_weight.dim() != 2:
        raise ValueError(
            f"lm_head_weight must be a 2-D [V, H] tensor, got "
            f"{tuple(lm_head_weight.shape) if isinstance(lm_head_weight, torch.Tensor) else type(lm_head_weight).__name__}"
        )
    V = lm_head_weight.shape[0]
    if lm_head_weight.shape[1] != H:
        raise ValueError(f"lm_head_weight must be [V, H] with H={H}, got {tuple(lm_head_weight.shape)}")
    if lm_head_weight.device != hidden.device:
        raise ValueError(f"lm_head_weight is on {lm_head_weight.device} but hidden is on {hidden.device}")
    tok = index_vector(token_ids, "token_ids", device=hidden.device)
    K = tok.shape[0]
    _check_mode(mode, K)
    if K > MAX_K:
        raise ValueError(f"judge_head supports k <= {MAX_K} token ids, got {K}; use a full lm_head matmul")
    if positions is not None:
        positions = index_vector(positions, "positions", device=hidden.device)
        if positions.shape[0] != B:
            raise ValueError(f"positions must have B={B} entries (len(cu_seqlens)-1), got {positions.shape[0]}")
    if validate:
        # Check the caller's tensor when it is on the host: no device round trip.
        host_cu = cu_seqlens if cu_seqlens.device.type == "cpu" else cu
        check_cu_seqlens_values(host_cu, T, nonempty=positions is None)
        if positions is not None:
            check_index_range(positions, T, "positions")
        check_index_range(tok, V, "token_ids")

    chosen = choose_path(path, hidden, lm_head_weight, dtype_ok=kernel_dtype_ok(hidden, lm_head_weight))
    if chosen == "reference":
        return judge_head_reference(hidden, cu, lm_head_weight, tok, positions, mode)

    logits = _dispatch.empty_out((B, K), torch.float32, hidden.device)
    reward = _dispatch.empty_out((B,), torch.float32, hidden.device)
    if B == 0:
        return JudgeHeadOutput(logits, reward)
    block_b, block_k, block_h, num_warps = _launch_config(B, K, H, chosen == "triton-interpret")
    kernel = resolve_kernel(_judge_head_kernel, chosen)
    grid = (triton.cdiv(B, block_b),)
    kernel[grid](
        hidden,
        lm_head_weight,
        tok,
        cu,
        positions if positions is not None else cu,
        logits,
        reward,
        B,
        T,
        H,
        V,
        K,
        hidden.stride(0),
        hidden.stride(1),
        lm_head_weight.stride(0),
        lm_head_weight.stride(1),
        HAS_POS=positions is not None,
        MODE=0 if mode == "diff" else 1,
        BLOCK_B=block_b,
        BLOCK_K=block_k,
        BLOCK_H=block_h,
        num_warps=num_warps,
    )
    return JudgeHeadOutput(logits, reward)
