"""Best-of-N group statistics over ragged groups of rewards.

Rewards of all candidates sit in one flat ``[M]`` vector; group ``g`` is
``rewards[offsets[g]:offsets[g+1]]`` (every group has at least one element). One call gives
per group the max, the first argmax (index within the group), and per candidate the z-score
(population std; 0 when the group's std is 0, e.g. a 1-element or constant group) and the
softmax of ``rewards / temperature`` within the group.

Statistics are computed on values shifted by the group max (``d = r - max``), so a constant
group has exactly zero deviations and a z-score of exactly 0 on every path.
NaN rewards are not given special treatment.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from . import _dispatch
from ._dispatch import auto_path, choose_path, kernel_dtype_ok, next_pow2, resolve_kernel
from ._validate import floating_tensor, index_vector
from .reward_head import reward_head

try:  # guarded: importing costtax.kernels must work without triton
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover
    triton = None
    tl = None


class GroupSelection(NamedTuple):
    max: torch.Tensor  # [G] float32
    argmax: torch.Tensor  # [G] int64, index within the group, first max on ties
    zscore: torch.Tensor  # [M] float32
    softmax: torch.Tensor  # [M] float32


if triton is not None:

    @triton.jit
    def _group_select_kernel(
        r_ptr,
        off_ptr,
        max_ptr,
        argmax_ptr,
        z_ptr,
        sm_ptr,
        temperature,
        BLOCK: tl.constexpr,
    ):
        g = tl.program_id(0)
        start = tl.load(off_ptr + g).to(tl.int64)
        n = (tl.load(off_ptr + g + 1).to(tl.int64) - start).to(tl.int32)
        base = r_ptr + start
        lane = tl.arange(0, BLOCK)
        big = 2147483647

        # Pass 1: per-lane running max and the first index reaching it. A lane keeps its
        # earliest index on ties (strict >), so the minimum index over lanes that hold the
        # group max is the first argmax.
        best_v = tl.full([BLOCK], float("-inf"), tl.float32)
        best_i = tl.full([BLOCK], big, tl.int32)
        for c in range(0, n, BLOCK):
            idx = c + lane
            m = idx < n
            x = tl.load(base + idx, mask=m, other=float("-inf")).to(tl.float32)
            take = m & ((x > best_v) | (best_i == big))
            best_v = tl.where(take, x, best_v)
            best_i = tl.where(take, idx, best_i)
        gmax = tl.max(best_v, axis=0)
        garg = tl.min(tl.where((best_v == gmax) & (best_i != big), best_i, big), axis=0)

        # Pass 2: sums of the shifted values and of the softmax numerators.
        s_d = tl.zeros([BLOCK], dtype=tl.float32)
        s_e = tl.zeros([BLOCK], dtype=tl.float32)
        for c in range(0, n, BLOCK):
            idx = c + lane
            m = idx < n
            x = tl.load(base + idx, mask=m, other=0.0).to(tl.float32)
            d = tl.where(m, x - gmax, 0.0)
            s_d += d
            s_e += tl.where(m, tl.exp(d / temperature), 0.0)
        mean_d = tl.sum(s_d, axis=0) / n
        denom = tl.sum(s_e, axis=0)

        # Pass 3: population variance around the mean.
        s_v = tl.zeros([BLOCK], dtype=tl.float32)
        for c in range(0, n, BLOCK):
            idx = c + lane
            m = idx < n
            x = tl.load(base + idx, mask=m, other=0.0).to(tl.float32)
            dev = tl.where(m, (x - gmax) - mean_d, 0.0)
            s_v += dev * dev
        std = tl.sqrt(tl.sum(s_v, axis=0) / n)
        inv_std = tl.where(std > 0, 1.0 / tl.where(std > 0, std, 1.0), 0.0)

        # Pass 4: write.
        for c in range(0, n, BLOCK):
            idx = c + lane
            m = idx < n
            x = tl.load(base + idx, mask=m, other=0.0).to(tl.float32)
            d = x - gmax
            tl.store(z_ptr + start + idx, (d - mean_d) * inv_std, mask=m)
            tl.store(sm_ptr + start + idx, tl.exp(d / temperature) / denom, mask=m)
        tl.store(max_ptr + g, gmax)
        tl.store(argmax_ptr + g, garg.to(tl.int64))

else:  # pragma: no cover
    _group_select_kernel = None


@functools.lru_cache(maxsize=4096)
def _launch_config(M: int, G: int, interpret: bool) -> tuple[int, int]:
    """(BLOCK, num_warps), cached: one program per group; the tile fits the *mean* group
    size (known from the shapes, so no device sync), and longer groups loop over tiles."""
    if interpret:
        return 64, 1
    block = min(max(next_pow2(-(-M // max(G, 1))), 32), 1024)
    return block, (1 if block <= 128 else 4)


def _check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive float, got {temperature!r}") from None
    if not (t > 0) or math.isinf(t):
        raise ValueError(f"temperature must be a finite float > 0, got {temperature!r}")
    return t


def _check_rewards(rewards: torch.Tensor) -> torch.Tensor:
    return floating_tensor(rewards, "rewards", 1, "[M]")


def _check_offsets_values(offsets: torch.Tensor, M: int) -> None:
    vals = offsets.detach().to("cpu").tolist()
    if not vals or vals[0] != 0:
        raise ValueError(f"group offsets must start at 0, got {vals[:4]}")
    if vals[-1] != M:
        raise ValueError(f"group offsets must end at M={M} (len(rewards)), got {vals[-1]}")
    sizes = [b - a for a, b in zip(vals[:-1], vals[1:])]
    bad = [i for i, s in enumerate(sizes) if s < 1]
    if bad:
        raise ValueError(f"every group needs >= 1 element; groups {bad[:8]} have sizes {[sizes[i] for i in bad[:8]]}")


def group_select_reference(
    rewards: torch.Tensor, offsets: torch.Tensor, temperature: float = 1.0
) -> GroupSelection:
    """Vectorised plain torch (segment reductions, no Python loop over groups)."""
    t = _check_temperature(temperature)
    dev = rewards.device
    r = rewards.float()
    off = offsets.to(dev).long()
    G, M = off.shape[0] - 1, r.shape[0]
    sizes = off[1:] - off[:-1]
    gid = torch.repeat_interleave(torch.arange(G, device=dev), sizes, output_size=M)
    local = torch.arange(M, device=dev) - off[:-1][gid]

    gmax = torch.full((G,), float("-inf"), device=dev).scatter_reduce(0, gid, r, "amax", include_self=True)
    cand = torch.where(r == gmax[gid], local, torch.full_like(local, M))
    argmax = torch.full((G,), M, dtype=torch.long, device=dev).scatter_reduce(0, gid, cand, "amin", include_self=True)

    d = r - gmax[gid]
    n = sizes.float()
    mean_d = torch.zeros(G, device=dev).index_add_(0, gid, d) / n
    dev_ = d - mean_d[gid]
    std = torch.sqrt(torch.zeros(G, device=dev).index_add_(0, gid, dev_ * dev_) / n)
    inv_std = torch.where(std > 0, 1.0 / std, torch.zeros_like(std))
    zscore = dev_ * inv_std[gid]

    e = torch.exp(d / t)
    denom = torch.zeros(G, device=dev).index_add_(0, gid, e)
    softmax = e / denom[gid]
    return GroupSelection(gmax, argmax, zscore, softmax)


def group_select(
    rewards: torch.Tensor,
    offsets: torch.Tensor,
    temperature: float = 1.0,
    path: str | None = None,
    *,
    validate: bool = True,
) -> GroupSelection:
    """Per-group max / first argmax / z-score / softmax over ragged groups.

    Args:
        rewards: ``[M]`` float rewards of all candidates, grouped contiguously.
        offsets: ``[G+1]`` int32/int64 group boundaries; ``offsets[0] == 0``,
            ``offsets[-1] == M``, every group non-empty.
        temperature: softmax temperature (> 0): softmax of ``rewards / temperature``.
        path: ``None`` (auto), ``"triton"``, ``"triton-interpret"`` or ``"reference"``.
        validate: check the offsets' values (one device->host copy on CUDA). Invalid
            offsets with ``validate=False`` are undefined behaviour.

    Returns:
        ``GroupSelection(max [G] f32, argmax [G] i64 (within group), zscore [M] f32,
        softmax [M] f32)``.
    """
    rewards = _check_rewards(rewards)
    t = _check_temperature(temperature)
    off = index_vector(offsets, "offsets", device=rewards.device)
    if off.shape[0] < 1:
        raise ValueError("offsets must have G+1 >= 1 entries")
    G, M = off.shape[0] - 1, rewards.shape[0]
    if validate:
        _check_offsets_values(off, M)

    if path is None:
        chosen = auto_path(rewards.is_cuda, kernel_dtype_ok(rewards))
    else:
        chosen = choose_path(path, rewards, dtype_ok=kernel_dtype_ok(rewards))
    if chosen == "reference":
        return group_select_reference(rewards, off, t)

    dev = rewards.device
    gmax = _dispatch.empty_out((G,), torch.float32, dev)
    argmax = _dispatch.empty_out((G,), torch.int64, dev)
    zscore = _dispatch.empty_out((M,), torch.float32, dev)
    softmax = _dispatch.empty_out((M,), torch.float32, dev)
    if G == 0:
        return GroupSelection(gmax, argmax, zscore, softmax)
    block, num_warps = _launch_config(M, G, chosen == "triton-interpret")
    resolve_kernel(_group_select_kernel, chosen)[(G,)](
        rewards,
        off,
        gmax,
        argmax,
        zscore,
        softmax,
        t,
        BLOCK=block,
        num_warps=num_warps,
    )
    return GroupSelection(gmax, argmax, zscore, softmax)


def reward_head_group_select(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    weight: torch.Tensor,
    bias: float | torch.Tensor | None,
    group_offsets: torch.Tensor,
    temperature: float = 1.0,
    path: str | None = None,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, GroupSelection]:
    """Reward head then group selection: ``(rewards [B], GroupSelection)``.

    Not fused: this launches :func:`reward_head` and then :func:`group_select` (two kernel
    launches; the B rewards make a round trip through global memory, which is B*4 bytes).
    ``group_offsets`` ``[G+1]`` partition the B sequences (``group_offsets[-1] == B``).
    """
    rewards = reward_head(hidden, cu_seqlens, weight, bias, path=path, validate=validate)
    return rewards, group_select(rewards, group_offsets, temperature, path=path, validate=validate)

