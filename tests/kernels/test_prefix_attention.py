"""prefix_attention (cascade / Hydragen attention): Triton path (compiled on CUDA, interpreter on
CPU) vs the torch reference vs an independent naive attention over concat(prefix, own) with a
causal mask on the own part. Shapes are odd on purpose (head_dim not a power of two, GQA 3:1,
prefixes that are not a multiple of the key tile, an empty prefix, S over one query tile) but
small: the interpreter pays ~2 ms per program (B * Hq * ceil(S / 64) programs here)."""

from __future__ import annotations

import pytest
import torch
from _kernels_testutil import assert_no_poison

from costtax.kernels._dispatch import kernel_path
from costtax.kernels.prefix_attention import prefix_attention, prefix_attention_reference

pytestmark = pytest.mark.integration

# (B, Hq, Hkv, S, P, D)
SHAPES = {
    "one_token": (1, 1, 1, 1, 1, 16),
    "gqa2_d40": (3, 4, 2, 5, 7, 40),
    "no_prefix_two_qtiles": (2, 2, 2, 70, 0, 64),
    "gqa3_long_prefix": (2, 3, 1, 17, 130, 16),
    "d48_prefix65": (1, 2, 1, 33, 65, 48),
}
# (atol, rtol) for the op's output vs a fp32 computation: fp32 differs by summation order
# only; bf16/fp16 outputs are rounded to the dtype (bf16 keeps ~3 significant digits).
TOL = {
    torch.float32: (2e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _close(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _inputs(shape, dtype, device):
    """Drawn on the CPU from the seeded generator, then moved: same values on any device."""
    B, Hq, Hkv, S, P, D = shape
    q = torch.randn(B, Hq, S, D).to(dtype)
    k = torch.randn(B, Hkv, S, D).to(dtype)
    v = torch.randn(B, Hkv, S, D).to(dtype)
    pk = torch.randn(Hkv, P, D).to(dtype)
    pv = torch.randn(Hkv, P, D).to(dtype)
    return [t.to(device) for t in (q, k, v, pk, pv)]


def _naive(q, k, v, pk, pv, scale=None, return_scores=False):
    """Attention over an explicit N-fold copy of the prefix concatenated with the own keys,
    one softmax, fp32, on the CPU."""
    q, k, v, pk, pv = (t.detach().float().cpu() for t in (q, k, v, pk, pv))
    B, Hq, S, D = q.shape
    Hkv, P = k.shape[1], pk.shape[1]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    keys = torch.cat([pk.unsqueeze(0).expand(B, -1, -1, -1), k], 2).repeat_interleave(G, 1)
    vals = torch.cat([pv.unsqueeze(0).expand(B, -1, -1, -1), v], 2).repeat_interleave(G, 1)
    scores = q @ keys.transpose(2, 3) * scale
    allowed = torch.ones(S, P + S, dtype=torch.bool)
    allowed[:, P:] = torch.ones(S, S, dtype=torch.bool).tril()
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, -1) @ vals
    return (out, scores) if return_scores else out


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_matches_reference_and_naive(shape, dtype, seed, poison, auto_path, device):
    q, k, v, pk, pv = _inputs(shape, dtype, device)
    out = prefix_attention(q, k, v, pk, pv)
    assert out.shape == q.shape and out.dtype == dtype and out.device.type == torch.device(device).type
    assert_no_poison(poison, device)
    ref = prefix_attention_reference(q, k, v, pk, pv)
    assert ref.dtype == dtype
    naive = _naive(q, k, v, pk, pv)
    _close(out, naive, dtype, f"{auto_path} vs naive")
    _close(ref, naive, dtype, "reference vs naive")


def test_strided_inputs_custom_scale_and_4d_prefix(seed, auto_path, device):
    """Queries as transformers hands them over ([B, S, H, D] storage, transposed), a 4-D
    batch-1 prefix, a non-default scale."""
    B, Hq, Hkv, S, P, D = 2, 4, 2, 9, 21, 32
    q = torch.randn(B, S, Hq, D).to(device).transpose(1, 2)
    k = torch.randn(B, S, Hkv, D).to(device).transpose(1, 2)
    v = torch.randn(B, Hkv, S, D).to(device)
    pk = torch.randn(1, P, Hkv, D).to(device).transpose(1, 2)
    pv = torch.randn(1, Hkv, P, D).to(device)
    assert not q.is_contiguous() and not pk.is_contiguous()
    out = prefix_attention(q, k, v, pk, pv, scale=0.3)
    _close(out, _naive(q, k, v, pk[0], pv[0], scale=0.3), torch.float32, f"{auto_path} strided")


def test_reference_lse_is_the_merged_logsumexp(seed):
    q, k, v, pk, pv = _inputs((2, 4, 2, 6, 11, 16), torch.float32, "cpu")
    out, lse = prefix_attention_reference(q, k, v, pk, pv, return_lse=True)
    naive, scores = _naive(q, k, v, pk, pv, return_scores=True)
    _close(out, naive, torch.float32, "out")
    _close(lse, torch.logsumexp(scores, -1), torch.float32, "lse")


def test_reference_batch_chunking_gives_the_same_result(seed):
    """The reference cuts the batch so a score matrix stays bounded; cutting changes nothing."""
    q, k, v, pk, pv = _inputs((5, 2, 1, 7, 13, 16), torch.float32, "cpu")
    whole = prefix_attention_reference(q, k, v, pk, pv)
    cut = prefix_attention_reference(q, k, v, pk, pv, max_scores=1)  # one sequence at a time
    torch.testing.assert_close(whole, cut)


def test_empty_prefix_is_causal_attention(seed, auto_path, device):
    q, k, v, pk, pv = _inputs((2, 2, 2, 19, 0, 16), torch.float32, device)
    expect = torch.nn.functional.scaled_dot_product_attention(q.cpu(), k.cpu(), v.cpu(), is_causal=True)
    _close(prefix_attention(q, k, v, pk, pv), expect, torch.float32, "P=0")


def test_prefix_is_one_copy_shared_by_all_sequences(seed):
    """Sequences with identical own tokens get identical outputs, and changing the single
    prefix copy changes every sequence's output (nothing cached per sequence)."""
    q, k, v, pk, pv = _inputs((1, 2, 1, 4, 9, 16), torch.float32, "cpu")
    q3, k3, v3 = (t.expand(3, -1, -1, -1) for t in (q, k, v))
    a = prefix_attention(q3, k3, v3, pk, pv)
    assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])
    b = prefix_attention(q3, k3, v3, pk, pv * 2)
    assert all(not torch.allclose(a[i], b[i]) for i in range(3))


def test_explicit_paths_agree(seed, auto_path, device):
    q, k, v, pk, pv = _inputs((2, 2, 1, 10, 20, 24), torch.float32, device)
    a = prefix_attention(q, k, v, pk, pv, path="reference")
    b = prefix_attention(q, k, v, pk, pv, path=auto_path)
    _close(a, b, torch.float32, "reference vs kernel")
    assert kernel_path(q) == auto_path


def test_empty_batch(device):
    q, k, v, pk, pv = _inputs((0, 2, 1, 3, 4, 16), torch.float32, device)
    assert prefix_attention(q, k, v, pk, pv).shape == (0, 2, 3, 16)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda q, k, v, pk, pv: (q, k[:, :, :-1], v, pk, pv), "k and v must be"),
        (lambda q, k, v, pk, pv: (q[:, :3], k, v, pk, pv), "multiple of kv heads"),
        (lambda q, k, v, pk, pv: (q, k, v, pk[:, :, :-1], pv), "prefix_k and prefix_v must be"),
        (lambda q, k, v, pk, pv: (q, k, v, pk.unsqueeze(0).expand(2, -1, -1, -1), pv.unsqueeze(0)), "batch 1"),
        (lambda q, k, v, pk, pv: (q[0], k, v, pk, pv), "4-D"),
        (lambda q, k, v, pk, pv: (q, k.long(), v, pk, pv), "floating"),
    ],
)
def test_bad_shapes_raise_one_clear_error(bad, match):
    args = bad(*_inputs((2, 4, 2, 5, 6, 16), torch.float32, "cpu"))
    with pytest.raises(ValueError, match=match):
        prefix_attention(*args)


@pytest.mark.gpu
def test_cuda_bf16_at_scoring_shapes():
    """A BoN-16 group with a 1,024-token prefix and 128-token continuations at an 8B model's
    head shape (32 query heads, 8 kv heads, head_dim 128): compiled kernel vs reference."""
    g = torch.Generator().manual_seed(7)
    B, Hq, Hkv, S, P, D = 16, 32, 8, 128, 1024, 128
    make = lambda *s: torch.randn(*s, generator=g).to("cuda", torch.bfloat16)  # noqa: E731
    q, k, v = make(B, Hq, S, D), make(B, Hkv, S, D), make(B, Hkv, S, D)
    pk, pv = make(Hkv, P, D), make(Hkv, P, D)
    out = prefix_attention(q, k, v, pk, pv)
    ref = prefix_attention_reference(q, k, v, pk, pv)
    _close(out, ref, torch.bfloat16, "cuda bf16")


def test_hf_adapter_refuses_what_it_does_not_implement(seed):
    """The transformers attention function: [B, S, Hq, D] output for a valid call; one clear
    error for a missing prefix, a padding mask, a wrong-batch prefix cache."""
    from types import SimpleNamespace

    from costtax.kernels.prefix_attention import PrefixKV, hf_attention_forward

    q, k, v, pk, pv = _inputs((2, 4, 2, 5, 6, 16), torch.float32, "cpu")
    module = SimpleNamespace(layer_idx=1, config=SimpleNamespace())
    prefix = PrefixKV([pk[:, :1], pk], [pv[:, :1], pv])  # layer 1 holds the real prefix
    out, weights = hf_attention_forward(module, q, k, v, None, scaling=0.25, costtax_prefix=prefix)
    assert weights is None and out.shape == (2, 5, 4, 16)
    _close(out.transpose(1, 2), _naive(q, k, v, pk, pv, scale=0.25), torch.float32, "adapter")
    with pytest.raises(ValueError, match="costtax_prefix"):
        hf_attention_forward(module, q, k, v, None)
    with pytest.raises(ValueError, match="attention_mask=None"):
        hf_attention_forward(module, q, k, v, torch.ones(2, 1, 5, 11), costtax_prefix=prefix)
    with pytest.raises(ValueError, match="sliding"):
        hf_attention_forward(module, q, k, v, None, sliding_window=4, costtax_prefix=prefix)

    class TwoRowCache:  # a cache of batch 2 is not ONE shared prefix
        key_cache, value_cache = [pk.unsqueeze(0).expand(2, -1, -1, -1)], [pv.unsqueeze(0).expand(2, -1, -1, -1)]

    with pytest.raises(ValueError, match="batch-1"):
        PrefixKV.from_cache(TwoRowCache())
