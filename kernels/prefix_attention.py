"""Cascade ("Hydragen") attention: N continuations over ONE shared prefix KV.

Scoring a best-of-N group runs N sequences that all start with the same prefix (a judge's
instructions and the user turn, or a reward model's rendered prompt). After the prefix has
been run once, each continuation's queries attend to two key sets:

* the shared prefix keys/values ``prefix_k, prefix_v [Hkv, P, D]`` -- one copy for the whole
  batch, never repeated N times (no mask: every query sees every prefix key);
* its own keys/values ``k, v [B, Hkv, S, D]`` -- causally (query ``i`` sees own keys ``0..i``).

Each part is a softmax attention with its own log-sum-exp; the two are merged exactly:

    lse    = logaddexp(lse_prefix, lse_own)
    out    = out_prefix * exp(lse_prefix - lse) + out_own * exp(lse_own - lse)

which equals attention over ``concat(prefix, own)`` with a causal mask on the own part
(Juravsky et al., 2024, "Hydragen"). Grouped-query attention: ``Hq`` a multiple of ``Hkv``;
query head ``h`` reads kv head ``h // (Hq // Hkv)``.

Right-padded continuations need no mask: a real token never attends to a later (padded)
position under the causal rule, and padded rows are ignored by the caller.

Paths (as the other ops, see ``_dispatch``): CUDA tensors -> compiled Triton;
``TRITON_INTERPRET=1`` -> the Triton interpreter; otherwise the torch reference, which
computes the prefix part as one GEMM per kv head over the queries of all B sequences (the
Hydragen batching) against the single prefix copy.

:func:`hf_attention_forward` adapts the op to transformers' ``AttentionInterface`` (see
:func:`register_hf_attention`); the shared prefix reaches it as the ``costtax_prefix`` keyword
of the model's forward (a :class:`PrefixKV`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from . import _dispatch
from ._dispatch import choose_path, kernel_dtype_ok, next_pow2, resolve_kernel

try:  # guarded: importing costtax.kernels must work without triton
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - exercised only where triton is absent/broken
    triton = None
    tl = None

HF_ATTN_NAME = "costtax_prefix"
_LOG2E = 1.4426950408889634  # 1 / ln 2

if triton is not None:

    @triton.jit
    def _attend_block(q, kt, vb, keep, m, l, acc, qk_scale, F32_DOT: tl.constexpr):
        """One key block of the online softmax (base 2), for both parts of the kernel: scores
        q.kt of the kept keys, then the running max ``m``, normaliser ``l`` and accumulator
        ``acc`` updated with the block's values ``vb``. Returns (m, l, acc)."""
        if F32_DOT:  # no tf32 rounding: fp32 inputs get fp32 products
            kt = kt.to(tl.float32)
            vb = vb.to(tl.float32)
            s = tl.dot(q, kt, input_precision="ieee") * qk_scale
        else:
            s = tl.dot(q, kt) * qk_scale
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        if F32_DOT:
            acc = acc * alpha[:, None] + tl.dot(p, vb, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb)
        return m_new, l, acc

    @triton.jit
    def _prefix_attention_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        pk_ptr,
        pv_ptr,
        out_ptr,
        Hq,
        S,
        P,
        D,
        GROUP,  # Hq // Hkv
        sq_b, sq_h, sq_s, sq_d,
        sk_b, sk_h, sk_s, sk_d,
        sv_b, sv_h, sv_s, sv_d,
        spk_h, spk_s, spk_d,
        spv_h, spv_s, spv_d,
        so_b, so_h, so_s, so_d,
        qk_scale,  # softmax scale * log2(e): the kernel works in base 2
        F32_DOT: tl.constexpr,  # upcast operands to fp32 before tl.dot (fp32 inputs; the interpreter)
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // Hq
        h = pid_bh % Hq
        hk = h // GROUP
        b64 = b.to(tl.int64)

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < S
        d_mask = offs_d < D

        q = tl.load(
            q_ptr + b64 * sq_b + h * sq_h + offs_m[:, None] * sq_s + offs_d[None, :] * sq_d,
            mask=m_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        if F32_DOT:
            q = q.to(tl.float32)

        # ---- part 1: the shared prefix (one copy, read by every sequence's programs)
        m1 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l1 = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for n0 in range(0, P, BLOCK_N):
            n = n0 + offs_n
            n_mask = n < P
            kt = tl.load(
                pk_ptr + hk * spk_h + n[None, :] * spk_s + offs_d[:, None] * spk_d,
                mask=d_mask[:, None] & n_mask[None, :],
                other=0.0,
            )
            vb = tl.load(
                pv_ptr + hk * spv_h + n[:, None] * spv_s + offs_d[None, :] * spv_d,
                mask=n_mask[:, None] & d_mask[None, :],
                other=0.0,
            )
            m1, l1, acc1 = _attend_block(q, kt, vb, n_mask[None, :], m1, l1, acc1, qk_scale, F32_DOT)

        # ---- part 2: the sequence's own tokens, causal (keys up to the block's last query)
        m2 = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l2 = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        hi = tl.minimum((pid_m + 1) * BLOCK_M, S)
        for n0 in range(0, hi, BLOCK_N):
            n = n0 + offs_n
            n_mask = n < S
            kt = tl.load(
                k_ptr + b64 * sk_b + hk * sk_h + n[None, :] * sk_s + offs_d[:, None] * sk_d,
                mask=d_mask[:, None] & n_mask[None, :],
                other=0.0,
            )
            vb = tl.load(
                v_ptr + b64 * sv_b + hk * sv_h + n[:, None] * sv_s + offs_d[None, :] * sv_d,
                mask=n_mask[:, None] & d_mask[None, :],
                other=0.0,
            )
            keep = n_mask[None, :] & (n[None, :] <= offs_m[:, None])
            # every row keeps key 0 (n=0 <= offs_m), so m2 is finite from the first block
            m2, l2, acc2 = _attend_block(q, kt, vb, keep, m2, l2, acc2, qk_scale, F32_DOT)

        # ---- log-sum-exp merge (base 2): with P == 0, m1 = -inf and part 1 weighs 0
        m = tl.maximum(m1, m2)
        w1 = tl.exp2(m1 - m)
        w2 = tl.exp2(m2 - m)
        out = (acc1 * w1[:, None] + acc2 * w2[:, None]) / (l1 * w1 + l2 * w2)[:, None]
        tl.store(
            out_ptr + b64 * so_b + h * so_h + offs_m[:, None] * so_s + offs_d[None, :] * so_d,
            out.to(out_ptr.dtype.element_ty),
            mask=m_mask[:, None] & d_mask[None, :],
        )

else:  # pragma: no cover
    _prefix_attention_kernel = None


def _launch_config(S: int, D: int, interpret: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, num_warps). The interpreter pays ~2 ms per program, so it
    gets one query block per (sequence, head) when S is short; tl.dot needs tiles >= 16."""
    block_d = max(next_pow2(D), 16)
    if interpret:
        return min(max(next_pow2(S), 16), 64), 64, block_d, 1
    if block_d > 128:
        return 32, 32, block_d, 4
    return 64, 64, block_d, 4


def _check(q, k, v, prefix_k, prefix_v) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("q", q), ("k", k), ("v", v), ("prefix_k", prefix_k), ("prefix_v", prefix_v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D [B, H, S, D], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if prefix_k.dim() == 4:
        if prefix_k.shape[0] != 1 or prefix_v.dim() != 4 or prefix_v.shape[0] != 1:
            raise ValueError("a 4-D prefix_k/prefix_v must have batch 1: ONE prefix shared by all sequences")
        prefix_k, prefix_v = prefix_k[0], prefix_v[0]
    if prefix_k.dim() != 3 or prefix_v.dim() != 3:
        raise ValueError(f"prefix_k, prefix_v must be [Hkv, P, D], got {tuple(prefix_k.shape)}, {tuple(prefix_v.shape)}")
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    if k.shape != (B, Hkv, S, D) or v.shape != (B, Hkv, S, D):
        raise ValueError(f"k and v must be [B, Hkv, S, D] = [{B}, Hkv, {S}, {D}], got {tuple(k.shape)}, {tuple(v.shape)}")
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"query heads ({Hq}) must be a multiple of kv heads ({Hkv})")
    P = prefix_k.shape[1]
    if prefix_k.shape != (Hkv, P, D) or prefix_v.shape != (Hkv, P, D):
        raise ValueError(
            f"prefix_k and prefix_v must be [Hkv, P, D] = [{Hkv}, P, {D}], got {tuple(prefix_k.shape)}, {tuple(prefix_v.shape)}"
        )
    return prefix_k, prefix_v


def _softmax_part(scores: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(scores) @ values, logsumexp(scores)) over the last dim; fully masked rows
    (all -inf, e.g. an empty prefix) give out 0 and lse -inf."""
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return torch.exp(scores - safe.unsqueeze(-1)) @ values, lse


def prefix_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    *,
    scale: float | None = None,
    return_lse: bool = False,
    max_scores: int = 1 << 25,
):
    """Plain-torch cascade attention with the kernel's semantics (fp32 math, output in
    ``q.dtype``). The prefix part is one matmul per kv head over the queries of all sequences
    and all heads of its group, against the single prefix copy (no N-fold expansion); the
    batch is cut so a score matrix holds at most ``max_scores`` elements. ``return_lse``
    also returns the merged natural-log log-sum-exp ``[B, Hq, S]`` (fp32)."""
    prefix_k, prefix_v = _check(q, k, v, prefix_k, prefix_v)
    B, Hq, S, D = q.shape
    Hkv, P = k.shape[1], prefix_k.shape[1]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else float(scale)
    out = torch.empty(B, Hq, S, D, dtype=q.dtype, device=q.device)
    lse_all = torch.empty(B, Hq, S, dtype=torch.float32, device=q.device) if return_lse else None
    pk = prefix_k.float()
    pv = prefix_v.float()
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril()
    step = max(1, max_scores // max(1, Hq * S * max(P, S)))
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        nb = b1 - b0
        qf = q[b0:b1].float().reshape(nb, Hkv, G * S, D) * scale  # [nb, Hkv, G*S, D]
        # part 1: queries of all nb sequences x G heads as the rows of one GEMM per kv head
        rows = qf.permute(1, 0, 2, 3).reshape(Hkv, nb * G * S, D)
        if P:
            o1, l1 = _softmax_part(rows @ pk.transpose(1, 2), pv)  # [Hkv, nb*G*S, D|]
        else:
            o1 = rows.new_zeros(Hkv, nb * G * S, D)
            l1 = rows.new_full((Hkv, nb * G * S), float("-inf"))
        o1 = o1.reshape(Hkv, nb, G * S, D).permute(1, 0, 2, 3)
        l1 = l1.reshape(Hkv, nb, G * S).permute(1, 0, 2)
        # part 2: own keys, causal
        s2 = qf @ k[b0:b1].float().transpose(2, 3)  # [nb, Hkv, G*S, S]
        s2 = s2.reshape(nb, Hkv, G, S, S).masked_fill(~causal, float("-inf")).reshape(nb, Hkv, G * S, S)
        o2, l2 = _softmax_part(s2, v[b0:b1].float())
        lse = torch.logaddexp(l1, l2)
        merged = o1 * torch.exp(l1 - lse).unsqueeze(-1) + o2 * torch.exp(l2 - lse).unsqueeze(-1)
        out[b0:b1] = merged.reshape(nb, Hq, S, D).to(q.dtype)
        if lse_all is not None:
            lse_all[b0:b1] = lse.reshape(nb, Hq, S)
    return (out, lse_all) if return_lse else out


def prefix_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    prefix_k: torch.Tensor,
    prefix_v: torch.Tensor,
    *,
    scale: float | None = None,
    path: str | None = None,
) -> torch.Tensor:
    """Attention of B continuations over one shared prefix plus their own tokens (causal).

    Args:
        q: ``[B, Hq, S, D]`` queries of the continuations (fp32/bf16/fp16, any strides).
        k, v: ``[B, Hkv, S, D]`` the continuations' own keys/values (``Hq % Hkv == 0``).
        prefix_k, prefix_v: ``[Hkv, P, D]`` (or ``[1, Hkv, P, D]``) the shared prefix; ``P``
            may be 0. Keys must already carry their positions (e.g. rotary applied).
        scale: softmax scale; default ``D ** -0.5``.
        path: ``None`` (auto), ``"triton"``, ``"triton-interpret"`` or ``"reference"``.

    Returns ``[B, Hq, S, D]`` in ``q.dtype``.
    """
    prefix_k, prefix_v = _check(q, k, v, prefix_k, prefix_v)
    ts = (q, k, v, prefix_k, prefix_v)
    chosen = choose_path(path, *ts, dtype_ok=kernel_dtype_ok(*ts))
    if chosen == "reference":
        return prefix_attention_reference(q, k, v, prefix_k, prefix_v, scale=scale)
    B, Hq, S, D = q.shape
    Hkv, P = k.shape[1], prefix_k.shape[1]
    scale = D**-0.5 if scale is None else float(scale)
    out = _dispatch.empty_out((B, Hq, S, D), q.dtype, q.device)
    if B == 0 or S == 0 or Hq == 0:
        return out
    interpret = chosen == "triton-interpret"
    block_m, block_n, block_d, num_warps = _launch_config(S, D, interpret)
    kernel = resolve_kernel(_prefix_attention_kernel, chosen)
    # bf16 tl.dot is wrong in the interpreter: upcast there; fp32 inputs always take fp32 dots.
    f32_dot = interpret or q.dtype == torch.float32 or any(t.dtype != q.dtype for t in ts)
    grid = (triton.cdiv(S, block_m), B * Hq)
    kernel[grid](
        q, k, v, prefix_k, prefix_v, out,
        Hq, S, P, D, Hq // Hkv,
        *q.stride(), *k.stride(), *v.stride(),
        *prefix_k.stride(), *prefix_v.stride(), *out.stride(),
        scale * _LOG2E,
        F32_DOT=f32_dot,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return out


# ---- transformers integration ------------------------------------------------------------
class PrefixKV:
    """The shared prefix of a group, per decoder layer: ``keys[i], values[i]`` are
    ``[Hkv, P, D]`` (batch 1 squeezed), as the layer's attention saw them (rotary applied).
    ``path`` is the kernel path the attention calls take (None: auto)."""

    def __init__(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], path: str | None = None):
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} key tensors but {len(values)} value tensors")
        self.keys = [x[0] if x.dim() == 4 else x for x in keys]
        self.values = [x[0] if x.dim() == 4 else x for x in values]
        self.path = path
        self.length = int(self.keys[0].shape[1]) if self.keys else 0

    @classmethod
    def from_cache(cls, cache: Any, path: str | None = None) -> "PrefixKV":
        """From a transformers cache of batch 1 (``DynamicCache``: ``.layers[i].keys`` in
        5.x, ``key_cache[i]`` in 4.x)."""
        layers = getattr(cache, "layers", None)
        if layers is not None:
            keys = [layer.keys for layer in layers]
            values = [layer.values for layer in layers]
        elif hasattr(cache, "key_cache"):
            keys, values = list(cache.key_cache), list(cache.value_cache)
        else:
            raise ValueError(f"cannot read per-layer keys/values from {type(cache).__name__}")
        if any(x is None or x.dim() != 4 or x.shape[0] != 1 for x in keys):
            raise ValueError("the prefix cache must hold batch-1 [1, Hkv, P, D] tensors for every layer")
        return cls(keys, values, path)

    def layer(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[idx], self.values[idx]


def hf_attention_forward(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An ``AttentionInterface`` function: ``query [B, Hq, S, D]`` and the continuation's own
    ``key``/``value`` from the layer, the shared prefix from ``kwargs["costtax_prefix"]``.
    Returns ``([B, S, Hq, D], None)`` as transformers expects. Refuses what it does not
    implement (a padding mask, sliding windows, softcapping, dropout) instead of silently
    computing something else."""
    prefix = kwargs.get("costtax_prefix")
    if not isinstance(prefix, PrefixKV):
        raise ValueError(f"attn_implementation={HF_ATTN_NAME!r} needs costtax_prefix=PrefixKV(...) in the forward call")
    if attention_mask is not None:
        raise ValueError(f"{HF_ATTN_NAME}: pass attention_mask=None (right-padded continuations need no mask)")
    if dropout:
        raise ValueError(f"{HF_ATTN_NAME}: dropout is not supported (eval only)")
    if kwargs.get("sliding_window") or getattr(module, "sliding_window", None):
        raise ValueError(f"{HF_ATTN_NAME}: sliding-window attention is not supported")
    if kwargs.get("softcap") or getattr(getattr(module, "config", None), "attn_logit_softcapping", None):
        raise ValueError(f"{HF_ATTN_NAME}: attention logit softcapping is not supported")
    layer_idx = getattr(module, "layer_idx", None)
    if layer_idx is None:
        raise ValueError(f"{HF_ATTN_NAME}: the attention module has no layer_idx")
    pk, pv = prefix.layer(int(layer_idx))
    if pk.dtype != query.dtype:
        pk, pv = pk.to(query.dtype), pv.to(query.dtype)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = prefix_attention(query, key, value, pk, pv, scale=scale, path=prefix.path)
    return out.transpose(1, 2).contiguous(), None


def register_hf_attention() -> str:
    """Register :func:`hf_attention_forward` in transformers' ``AttentionInterface`` under
    ``"costtax_prefix"`` (idempotent) and return the name. No attention-mask function is
    registered on purpose: transformers then builds no mask (``attention_mask=None``)."""
    from transformers import AttentionInterface

    AttentionInterface.register(HF_ATTN_NAME, hf_attention_forward)
    return HF_ATTN_NAME
