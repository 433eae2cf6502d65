"""Batching plans for reward scoring: which sequences run together. Pure functions on token
lengths and ids (no torch); the scoring loop in _hf.py runs them.

Batching (``batching=``):

* ``"padded"`` (default on CPU and on CUDA without flash-attn): sequences are sorted by length
  and cut into buckets of consecutive sorted sequences (at most ``max_batch`` sequences and
  ``max_tokens`` padded positions each), right-padded, run as ``[b, L]``; the hidden states
  are flattened to ``[b*L, H]`` with ``cu_seqlens = arange(b+1) * L`` and ``positions`` = the
  row of each sequence's last real token. ``padding_fraction`` = padded positions / all
  positions computed.
* ``"packed"`` (default on CUDA when flash-attn is installed): sequences are concatenated into
  one row (``[1, T]``, at most ``max_tokens`` tokens per pack) with ``position_ids`` restarting
  at 0 for each sequence and no attention mask; transformers then attends within each sequence
  (flash-attn varlen; with sdpa/eager it builds a block-diagonal ``T x T`` mask, which is
  correct but spends ``T^2`` attention work -- that is why ``auto`` packs only with flash-attn).
  ``cu_seqlens`` are the real boundaries and the score row is each sequence's last token;
  ``padding_fraction`` is 0.0.

Group plans (``plan_groups``): pairs of one call with the same prompt share the longest common
token prefix of their sequences (see prefix_cache.py for how it is scored).
"""
from __future__ import annotations

from typing import Sequence


def plan_buckets(lengths: Sequence[int], max_batch: int, max_tokens: int | None = None) -> list[list[int]]:
    """Sort indices by length (stable) and cut the sorted order into consecutive buckets of
    at most ``max_batch`` sequences whose padded size (count x longest) stays within
    ``max_tokens`` (a single longer sequence still gets its own bucket)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = max([lengths[j] for j in cur] + [lengths[i]])
        if cur and (len(cur) >= max_batch or (max_tokens is not None and width * (len(cur) + 1) > max_tokens)):
            buckets.append(cur)
            cur = []
        cur.append(i)
    if cur:
        buckets.append(cur)
    return buckets


def padding_fraction(lengths: Sequence[int], buckets: Sequence[Sequence[int]]) -> float:
    """Padded positions / all positions computed when each bucket is padded to its longest."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in buckets if b)
    real = sum(lengths[i] for b in buckets for i in b)
    return (total - real) / total if total else 0.0


def plan_packs(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Consecutive packs (caller's order) of at most ``max_tokens`` tokens (a longer sequence
    gets a pack of its own)."""
    packs: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if cur and used + n > max_tokens:
            packs.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        packs.append(cur)
    return packs


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token sequences (0 for none or no sequences)."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(x) for x in seqs)
    for j in range(n):
        t = first[j]
        if any(x[j] != t for x in seqs):
            return j
    return n


def plan_groups(
    prompts: Sequence[str], seqs: Sequence[Sequence[int]], *, min_shared: int = 1, base: int = 0,
    base_ids: Sequence[int] | None = None,
) -> list[tuple[list[int], int, int]]:
    """Best-of-N groups to score over a shared prefix: ``(indices, L, start)`` per group of
    at least two pairs with the same prompt text, where ``L`` is the longest common token
    prefix of their sequences, capped at the shortest length minus 1 (every pair keeps its
    score row), and ``start`` is ``base`` when the sequences begin with ``base_ids`` (a KV cache
    of those ``base`` tokens exists already) else 0. Groups with fewer than ``min_shared``
    tokens to compute in the prefix (``L - start``) are left out: they score in full."""
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    out = []
    for idx in by_prompt.values():
        if len(idx) < 2:
            continue
        group = [seqs[i] for i in idx]
        L = min(common_prefix_len(group), min(len(x) for x in group) - 1)
        start = base if (base and base_ids is not None and L >= base and list(group[0][:base]) == list(base_ids)) else 0
        if L - start >= max(1, min_shared):
            out.append((list(idx), L, start))
    return out
