"""Last-token reward head over a packed (varlen) batch.

A scalar reward model scores sequence ``b`` at one row of the packed hidden states
``hidden [T, H]``: by default its last token, row ``cu_seqlens[b+1] - 1``. The naive HF-style
path applies the head to every position and then gathers; this kernel reads only the B
score rows (B*H elements instead of T*H) and accumulates in fp32.

    reward[b] = hidden[pos[b]] . weight + bias
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from . import _dispatch
from ._crossover import choose_impl
from ._dispatch import auto_path, choose_path, cuda_card, kernel_dtype_ok, next_pow2, resolve_kernel
from ._validate import hidden_matrix, ragged_rows

try:  # guarded: importing costtax.kernels must work without triton
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - exercised only where triton is absent/broken
    triton = None
    tl = None


if triton is not None:

    @triton.jit
    def _tl_score_rows(cu_ptr, pos_ptr, b, b_mask, T, HAS_POS: tl.constexpr):
        """(row [BLOCK_B] int64, valid [BLOCK_B]) of each sequence's score row (both heads use it;
        _score_rows below is the same rule in torch)."""
        if HAS_POS:
            pos = tl.load(pos_ptr + b, mask=b_mask, other=0).to(tl.int64)
            valid = b_mask & (pos >= 0) & (pos < T)
        else:
            start = tl.load(cu_ptr + b, mask=b_mask, other=0).to(tl.int64)
            end = tl.load(cu_ptr + b + 1, mask=b_mask, other=0).to(tl.int64)
            pos = end - 1
            valid = b_mask & (end > start) & (pos >= 0) & (pos < T)
        return pos, valid

    # B and T change every call; specialising on them (==1, %16) would only add recompiles
    # and per-call key work. Strides stay specialised (stride 1 -> vector loads).
    @triton.jit(do_not_specialize=["B", "T"])
    def _reward_head_kernel(
        hidden_ptr,
        weight_ptr,
        cu_ptr,
        pos_ptr,
        bias_ptr,
        out_ptr,
        B,
        T,
        H,
        stride_ht,
        stride_hh,
        stride_w,
        bias_val,
        HAS_POS: tl.constexpr,
        BIAS_MODE: tl.constexpr,  # 0: none, 1: scalar bias_val, 2: load bias_ptr[0]
        BLOCK_B: tl.constexpr,
        BLOCK_H: tl.constexpr,
    ):
        pid = tl.program_id(0)
        b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
        b_mask = b < B
        pos, valid = _tl_score_rows(cu_ptr, pos_ptr, b, b_mask, T, HAS_POS)
        # Invalid rows read row 0 under a false mask: no out-of-bounds address is formed.
        row_off = tl.where(valid, pos, 0) * stride_ht
        acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        for h0 in range(0, H, BLOCK_H):
            offs = h0 + tl.arange(0, BLOCK_H)
            h_mask = offs < H
            w = tl.load(weight_ptr + offs * stride_w, mask=h_mask, other=0.0).to(tl.float32)
            x = tl.load(
                hidden_ptr + row_off[:, None] + offs[None, :] * stride_hh,
                mask=valid[:, None] & h_mask[None, :],
                other=0.0,
            ).to(tl.float32)
            acc += x * w[None, :]
        score = tl.sum(acc, axis=1)
        if BIAS_MODE == 1:
            score = score + bias_val
        if BIAS_MODE == 2:
            score = score + tl.load(bias_ptr).to(tl.float32)
        score = tl.where(valid, score, float("nan"))
        tl.store(out_ptr + b, score, mask=b_mask)

else:  # pragma: no cover
    _reward_head_kernel = None


@functools.lru_cache(maxsize=4096)
def _launch_config(B: int, H: int, interpret: bool) -> tuple[int, int, int, tuple[int]]:
    """(BLOCK_B, BLOCK_H, num_warps, grid), cached: B changes per call, so this is a dict
    hit after the first batch of each size. The interpreter pays ~2 ms per program, so it
    gets few, wide programs; the GPU gets one small tile per pair of sequences."""
    if interpret:
        block_b, block_h, warps = min(next_pow2(B), 8), min(max(next_pow2(H), 16), 64), 1
    else:
        block_b, block_h, warps = 2, min(max(next_pow2(H), 16), 2048), 4
    return block_b, block_h, warps, (-(-B // block_b),)


def _normalize_weight(weight: Any, H: int) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() == 2 and weight.shape[0] == 1:  # nn.Linear(H, 1).weight
        weight = weight[0]
    if weight.dim() != 1 or weight.shape[0] != H:
        raise ValueError(f"weight must have shape [H]=[{H}] (or [1, {H}]), got {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be a floating tensor, got {weight.dtype}")
    return weight


def _normalize_bias(bias: Any) -> float | torch.Tensor | None:
    if bias is None:
        return None
    if isinstance(bias, torch.Tensor):
        if bias.numel() != 1:
            raise ValueError(f"bias must be a scalar (0-dim or 1-element tensor), got shape {tuple(bias.shape)}")
        return bias.reshape(())
    if isinstance(bias, (int, float)):
        return float(bias)
    raise ValueError(f"bias must be a float, a 0-dim tensor or None, got {type(bias).__name__}")


def _score_rows(cu: torch.Tensor, positions: torch.Tensor | None, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos [B] int64, valid [B] bool) exactly as the kernel computes them."""
    if positions is None:
        start = cu[:-1].long()
        end = cu[1:].long()
        pos = end - 1
        valid = (end > start) & (pos >= 0) & (pos < T)
    else:
        pos = positions.long()
        valid = (pos >= 0) & (pos < T)
    return pos, valid


def reward_head_reference(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    weight: torch.Tensor,
    bias: float | torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain-torch reward head with the kernel's semantics (fp32 result; NaN for a
    sequence whose score row is invalid). Gathers the B score rows, then one matvec."""
    T, H = hidden.shape
    weight = _normalize_weight(weight, H)
    bias = _normalize_bias(bias)
    cu = cu_seqlens.to(hidden.device)
    if positions is not None:
        positions = positions.to(hidden.device)
    pos, valid = _score_rows(cu, positions, T)
    B = pos.shape[0]
    if T == 0:
        return torch.full((B,), float("nan"), dtype=torch.float32, device=hidden.device)
    rows = hidden.index_select(0, torch.where(valid, pos, torch.zeros_like(pos))).float()
    out = rows @ weight.to(device=hidden.device, dtype=torch.float32)
    if isinstance(bias, torch.Tensor):
        out = out + bias.to(device=hidden.device, dtype=torch.float32)
    elif bias is not None:
        out = out + bias
    return torch.where(valid, out, torch.full_like(out, float("nan")))


def _weight_arg(weight: Any, H: int) -> tuple[torch.Tensor, int]:
    """(weight, stride along H) without making a view: ``[1, H]`` (nn.Linear(H, 1).weight)
    is read in place through its column stride (a ``weight[0]`` view is one more dispatched
    torch op per call)."""
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    shape = weight.shape
    if len(shape) == 1 and shape[0] == H:
        stride = weight.stride(0)
    elif len(shape) == 2 and shape[0] == 1 and shape[1] == H:
        stride = weight.stride(1)
    else:
        raise ValueError(f"weight must have shape [H]=[{H}] (or [1, {H}]), got {tuple(shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be a floating tensor, got {weight.dtype}")
    return weight, stride


def _bias_arg(bias: Any, device: torch.device) -> tuple[int, float, torch.Tensor | None]:
    """(BIAS_MODE, scalar value, tensor): a one-element tensor is read in place, no reshape."""
    if bias is None:
        return 0, 0.0, None
    if isinstance(bias, torch.Tensor):
        if bias.numel() != 1:
            raise ValueError(f"bias must be a scalar (0-dim or 1-element tensor), got shape {tuple(bias.shape)}")
        if bias.device != device:
            bias = bias.to(device)
        return 2, 0.0, bias
    if isinstance(bias, (int, float)) and not isinstance(bias, bool):
        return 1, float(bias), None
    raise ValueError(f"bias must be a float, a 0-dim tensor or None, got {type(bias).__name__}")


def _reward_head_torch(
    hidden: torch.Tensor,
    cu: torch.Tensor,
    weight: torch.Tensor,
    bias: float | torch.Tensor | None,
    positions: torch.Tensor | None,
    *,
    checked: bool,
) -> torch.Tensor:
    """The plain-torch expression the crossover table dispatches to at the measured shapes
    where it won: ``gather_rows``, the measured ``torch.mv(hidden.index_select(0, rows), w)``
    in the input dtype (grid column ``rh_gather_bf16``, see ``_crossover.py``), plus only what
    the kernel's contract needs around it and the measurement did not include: the rows from
    cu_seqlens when ``positions`` is None (one subtraction), a ``[1, H]`` weight's row view or
    dtype cast when needed, the fp32 cast, the bias. For bf16/fp16 inputs the score is
    rounded to that dtype before the cast (relative error <= 2**-9 for bf16), as an HF
    score head does; fp32 inputs match the kernel up to summation order. ``checked``: the
    index values were validated, so no clamping or NaN masking is needed."""
    T = hidden.shape[0]
    pos = positions if positions is not None else cu[1:] - 1
    B = pos.shape[0]
    if T == 0:
        return torch.full((B,), float("nan"), dtype=torch.float32, device=hidden.device)
    w1 = weight if weight.dim() == 1 else weight[0]
    if w1.dtype != hidden.dtype:
        w1 = w1.to(hidden.dtype)
    if not checked:
        if positions is None:
            valid = (cu[1:] > cu[:-1]) & (pos >= 0) & (pos < T)
        else:
            valid = (pos >= 0) & (pos < T)
        pos = pos.clamp(0, T - 1)
    out = torch.mv(hidden.index_select(0, pos), w1).float()
    if bias is not None:
        out += bias
    if not checked:
        out = torch.where(valid, out, math.nan)
    return out


def reward_head(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    weight: torch.Tensor,
    bias: float | torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    path: str | None = None,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Reward of each packed sequence at its score row; returns ``[B]`` float32.

    Args:
        hidden: ``[T, H]`` fp32/bf16/fp16 packed hidden states (any strides).
        cu_seqlens: ``[B+1]`` int32/int64 cumulative lengths; ``cu_seqlens[0] == 0`` and
            ``cu_seqlens[-1] <= T`` (trailing padding rows are allowed).
        weight: ``[H]`` (or ``[1, H]``, as ``nn.Linear(H, 1).weight``) head weight.
        bias: ``None``, a float, or a one-element tensor.
        positions: optional ``[B]`` int tensor of absolute row indices into ``hidden``;
            default: each sequence's last token ``cu_seqlens[b+1] - 1``.
        path: ``None`` (auto, see :func:`kernel_path`; on CUDA, for validated calls, the
            measured crossover table in ``_crossover.py`` picks the measured plain-torch
            expression at the measured shapes where it was faster; the kernel elsewhere),
            ``"triton"`` (always the compiled kernel), ``"triton-interpret"`` or ``"reference"``.
        validate: check the *values* of ``cu_seqlens``/``positions`` (one device->host copy
            on CUDA). Without it an invalid score row gives NaN for that sequence; no
            out-of-bounds read happens.

    Per-call host work on the kernel path (the cost that dominates at small shapes): metadata
    checks, one output allocation and the launch; no view, reshape or dtype conversion, no
    device->host copy with ``validate=False``, launch configuration cached per (B, H).
    """
    hidden = hidden_matrix(hidden)
    T, H = hidden.shape
    dev = hidden.device
    cu, positions, B = ragged_rows(cu_seqlens, positions, T, dev, validate=validate)
    weight, stride_w = _weight_arg(weight, H)
    if weight.device != dev:
        raise ValueError(f"weight is on {weight.device} but hidden is on {dev}")
    bias_mode, bias_val, bias_t = _bias_arg(bias, dev)

    bias_in = bias_t if bias_mode == 2 else (bias_val if bias_mode == 1 else None)
    if path is None:
        chosen = auto_path(hidden.is_cuda, kernel_dtype_ok(hidden, weight))
        # Validated calls only: without validation the torch expression needs ~10 more ops
        # (clamp, masks, where) to give NaN for bad rows as the kernel does.
        if validate and chosen == "triton" and choose_impl(
            "reward_head", {"B": B, "T": T, "H": H}, cuda_card(hidden.get_device())
        ) == "torch":
            return _reward_head_torch(hidden, cu, weight, bias_in, positions, checked=True)
    else:
        chosen = choose_path(path, hidden, weight, dtype_ok=kernel_dtype_ok(hidden, weight))
    if chosen == "reference":
        return reward_head_reference(hidden, cu, weight, bias_in, positions)

    out = _dispatch.empty_out((B,), torch.float32, dev)
    if B == 0:
        return out
    block_b, block_h, num_warps, grid = _launch_config(B, H, chosen == "triton-interpret")
    resolve_kernel(_reward_head_kernel, chosen)[grid](
        hidden,
        weight,
        cu,
        positions if positions is not None else cu,
        bias_t if bias_t is not None else out,
        out,
        B,
        T,
        H,
        hidden.stride(0),
        hidden.stride(1),
        stride_w,
        bias_val,
        HAS_POS=positions is not None,
        BIAS_MODE=bias_mode,
        BLOCK_B=block_b,
        BLOCK_H=block_h,
        num_warps=num_warps,
    )
    return out
