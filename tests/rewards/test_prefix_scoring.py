"""Shared-prefix reward scoring: a best-of-N group's common token prefix runs once and the N
responses attend to it (cascade attention over one prefix copy, or an expanded cache as the
fallback). Scores must equal full scoring (every pair run from its first token) within fp32
tolerance, in the caller's order, and the token accounting must be exact.

Tiny random models (costtax.tiny); on machines without CUDA tests/conftest.py sets
TRITON_INTERPRET=1, so both the heads and the prefix attention run in the Triton interpreter.
The embedded-judge twin is marked slow.
"""
from __future__ import annotations

import pytest

from costtax.rewards import make_reward_model
from costtax.rewards.batch_plans import common_prefix_len, plan_groups

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ASK = "Please write a short, polite email to a colleague asking for the report."
SUM = "What is 12 + 7? Answer with just the number."
# two best-of-N groups interleaved with a prompt seen once (scored without a group)
PROMPTS = [ASK, SUM, ASK, "hi", SUM, ASK, SUM, ASK]
RESPONSES = [
    "Hello, could you send me the report? Thanks.",
    "19",
    "No.",
    "The quick brown fox",
    "The answer is 19.",
    "Dear colleague, please send me the report when you can. Best regards.",
    "20",
    "",
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from 2 threads on a busy 2-core machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load(spec, **kw):
    """max_batch=2: a group of 4 spans two buckets over one prefix. ``kernel_path="reference"``
    where a test is about the scoring logic, not the kernel: the interpreter spends ~0.3 s per
    attention program over the tiny judge's ~650-token instructions."""
    rm = make_reward_model(spec, device="cpu", max_batch=2, **kw)
    rm.load()
    return rm


@pytest.fixture(scope="module")
def judge_pair(tiny_llama_dir):
    """(group-prefix judge, full-scoring judge) on the same tiny model; the group judge runs the
    prefix attention on the auto path (the Triton interpreter here, compiled Triton on CUDA)."""
    a, b = _load(f"judge:{tiny_llama_dir}"), _load(f"judge:{tiny_llama_dir}", prefix_cache=False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def scalar_pair(tiny_classifier_dir):
    a, b = _load(f"scalar:{tiny_classifier_dir}"), _load(f"scalar:{tiny_classifier_dir}", prefix_cache=False)
    yield a, b
    a.close()
    b.close()


def _check_accounting(res, rm, prompts):
    """tokens == computed + cached per pair; per group the computed tokens add up to the
    group prefix once (beyond the instruction cache) plus every pair's own suffix."""
    n = len(res.tokens)
    assert len(res.computed_tokens) == len(res.cached_tokens) == len(res.group_prefix_tokens) == n
    for t, c, k in zip(res.tokens, res.computed_tokens, res.cached_tokens):
        assert t == c + k and c >= 1 and k >= 0
    assert rm.loaded, "check before close(): the instruction cache is dropped then"
    static = len(rm._prefix_ids) if rm._prefix_kv is not None else 0
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    for idx in groups.values():
        L = res.group_prefix_tokens[idx[0]]
        if len(idx) == 1:
            assert L == 0 and res.computed_tokens[idx[0]] == res.tokens[idx[0]] - static
            continue
        assert L > static and all(res.group_prefix_tokens[i] == L for i in idx)
        expect = (L - static) + sum(res.tokens[i] - L for i in idx)
        assert sum(res.computed_tokens[i] for i in idx) == expect
        shares = [res.computed_tokens[i] - (res.tokens[i] - L) for i in idx]
        assert max(shares) - min(shares) <= 1  # the prefix is split evenly


# ---- pure helpers ------------------------------------------------------------------------------
def test_common_prefix_len_and_plan_groups_by_hand():
    assert common_prefix_len([]) == 0
    assert common_prefix_len([[1, 2, 3]]) == 3
    assert common_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_len([[7, 1], [1, 7]]) == 0
    seqs = [[1, 2, 3, 4, 5], [9, 9], [1, 2, 3, 4, 6, 7], [1, 2, 3, 4], [9, 9, 8]]
    prompts = ["a", "b", "a", "a", "b"]
    # group a: common prefix 4 but the shortest has 4 tokens, so L = 3 (each keeps its last token)
    # group b: common prefix 2, shortest 2 -> L = 1
    assert plan_groups(prompts, seqs) == [([0, 2, 3], 3, 0), ([1, 4], 1, 0)]
    assert plan_groups(prompts, seqs, min_shared=2) == [([0, 2, 3], 3, 0)]
    # a cached base of 2 tokens: group a starts computing after it; b does not start with it
    assert plan_groups(prompts, seqs, base=2, base_ids=[1, 2]) == [([0, 2, 3], 3, 2), ([1, 4], 1, 0)]
    assert plan_groups(prompts, seqs, base=2, base_ids=[1, 2], min_shared=2) == []
    assert plan_groups(["a", "b"], [[1, 2], [1, 2]]) == []  # no prompt seen twice
    assert plan_groups(["a", "a"], [[5, 1], [6, 1]]) == []  # no common prefix: full scoring


# ---- judge ----------------------------------------------------------------------------------
def test_judge_group_scores_equal_full_scores(judge_pair):
    group, full = judge_pair
    prov = group.provenance()
    assert prov["group_prefix"] == "on: cascade" and prov["prefix_cache"].startswith("on:")
    assert full.provenance()["group_prefix"] == "off"
    a = group.score(PROMPTS, RESPONSES)
    b = full.score(PROMPTS, RESPONSES)
    assert a.tokens == b.tokens  # tokens read are counted in full either way
    assert a.rewards == pytest.approx(b.rewards, abs=1e-4, rel=1e-4)
    assert b.computed_tokens == b.tokens and b.cached_tokens == (0,) * len(PROMPTS)
    assert b.group_prefix_tokens == (0,) * len(PROMPTS)
    _check_accounting(a, group, PROMPTS)
    assert sum(a.computed_tokens) < sum(b.computed_tokens) // 3


def test_judge_group_prefix_off_keeps_the_instruction_cache(tiny_llama_dir, judge_pair):
    rm = _load(f"judge:{tiny_llama_dir}", group_prefix=False, kernel_path="reference")
    try:
        res = rm.score(PROMPTS, RESPONSES)
        assert rm.provenance()["group_prefix"] == "off"
    finally:
        rm.close()
    P = len(rm._prefix_ids)
    assert res.group_prefix_tokens == (0,) * len(PROMPTS)
    assert res.cached_tokens == (P,) * len(PROMPTS)
    assert res.computed_tokens == tuple(t - P for t in res.tokens)
    assert res.rewards == pytest.approx(judge_pair[1].score(PROMPTS, RESPONSES).rewards, abs=1e-4, rel=1e-4)


def test_cascade_attends_to_one_prefix_copy(judge_pair, monkeypatch):
    """Every attention call of a group sees the same single [Hkv, L, D] prefix tensor per
    layer (not a per-sequence copy), with a batch of continuations."""
    import costtax.kernels.prefix_attention as pa

    group, full = judge_pair
    calls = []
    real = pa.prefix_attention

    def spy(q, k, v, pk, pv, **kw):
        calls.append((q.shape[0], tuple(pk.shape), pk.data_ptr()))
        return real(q, k, v, pk, pv, **kw)

    monkeypatch.setattr(pa, "prefix_attention", spy)
    prompts, responses = [SUM] * 4, ["19", "20", "The answer is 19.", "It is 19"]
    res = group.score(prompts, responses)
    L = res.group_prefix_tokens[0]
    n_layers = group._model.config.num_hidden_layers
    assert len(calls) == 2 * n_layers  # 4 responses, max_batch=2: two buckets over one prefix
    assert all(pk_shape[1] == L and len(pk_shape) == 3 for _, pk_shape, _ in calls)
    assert {b for b, _, _ in calls} == {2}
    ptrs = [ptr for _, _, ptr in calls]
    assert ptrs[:n_layers] == ptrs[n_layers:]  # the second bucket reads the same copies
    assert group._model.config._attn_implementation == "sdpa"  # switched back afterwards
    assert res.rewards == pytest.approx(full.score(prompts, responses).rewards, abs=1e-4, rel=1e-4)


def test_expand_fallback_when_the_attention_cannot_switch(tiny_llama_dir, judge_pair, monkeypatch):
    from costtax.rewards._hf import HFRewardBase

    def refuse(self, name):
        raise RuntimeError("cannot switch")

    monkeypatch.setattr(HFRewardBase, "_attention", refuse)
    rm = _load(f"judge:{tiny_llama_dir}", kernel_path="reference")
    try:
        assert rm.provenance()["group_prefix"] == "on: expand"
        res = rm.score(PROMPTS, RESPONSES)
        _check_accounting(res, rm, PROMPTS)
    finally:
        rm.close()
    assert res.rewards == pytest.approx(judge_pair[1].score(PROMPTS, RESPONSES).rewards, abs=1e-4, rel=1e-4)


def test_a_wrong_group_path_is_switched_off_at_load(tiny_llama_dir, monkeypatch):
    """The load-time probe compares with full scoring: a group path that gives other scores
    is never used (here both modes are made wrong)."""
    from costtax.rewards._hf import HFRewardBase

    real = HFRewardBase._run_group

    def skewed(self, seqs, L, start, rewards, mode, attn_path=None):
        out = real(self, seqs, L, start, rewards, mode, attn_path)
        rewards[:] = [r + 1.0 for r in rewards]
        return out

    monkeypatch.setattr(HFRewardBase, "_run_group", skewed)
    rm = _load(f"judge:{tiny_llama_dir}", kernel_path="reference")
    try:
        note = rm.provenance()["group_prefix"]
        res = rm.score(PROMPTS[:3], RESPONSES[:3])
    finally:
        rm.close()
    assert note.startswith("off:") and "cascade" in note and "expand" in note
    assert res.group_prefix_tokens == (0, 0, 0)


def test_packed_batching_scores_groups_over_their_prefix(tiny_llama_dir, judge_pair):
    """Packed batching has no instruction cache; groups still share their prefix (from token 0)
    and the pairs without a group are packed."""
    rm = _load(f"judge:{tiny_llama_dir}", batching="packed", kernel_path="reference")
    try:
        prov = rm.provenance()
        res = rm.score(PROMPTS, RESPONSES)
        _check_accounting(res, rm, PROMPTS)
    finally:
        rm.close()
    assert prov["prefix_cache"] == "off: packed batching" and prov["group_prefix"] == "on: cascade"
    assert res.rewards == pytest.approx(judge_pair[1].score(PROMPTS, RESPONSES).rewards, abs=1e-4, rel=1e-4)
    assert res.group_prefix_tokens[PROMPTS.index("hi")] == 0


# ---- scalar RM ----------------------------------------------------------------------------------
def test_scalar_group_scores_equal_full_scores(scalar_pair):
    group, full = scalar_pair
    assert group.provenance()["group_prefix"] == "on: cascade"
    a = group.score(PROMPTS, RESPONSES)
    b = full.score(PROMPTS, RESPONSES)
    assert a.tokens == b.tokens
    assert a.rewards == pytest.approx(b.rewards, abs=1e-4, rel=1e-4)
    _check_accounting(a, group, PROMPTS)


def test_padding_fraction_counts_the_prefix_once(scalar_pair):
    group, _ = scalar_pair
    res = group.score(["hi", "hi"], ["", "The quick brown fox jumps over the lazy dog."])
    L = res.group_prefix_tokens[0]
    assert L > 0
    short, long = sorted(t - L for t in res.tokens)
    # the prefix runs once (L positions, no padding), then one bucket of both suffixes padded to the longer
    assert res.padding_fraction == pytest.approx((long - short) / (L + 2 * long))


def test_split_point_follows_tokens_not_text(scalar_pair):
    """With ChatML the responses " 19" / " 20" start with a space that BPE merges into the
    number ("Ġ19"): the rendered text the pairs share ends with that space, but its tokens are
    not a prefix of the pairs' tokens. The group prefix is the common *token* prefix instead,
    and scores still equal full scoring."""
    group, full = scalar_pair
    tok = group._tok
    responses = [" 19", " 20", " 19 is the answer", " 21"]
    texts = [group.format_text(SUM, r)[0] for r in responses]
    shared_text = texts[0][: common_prefix_len([list(t) for t in texts])]
    text_ids = tok(shared_text, add_special_tokens=False)["input_ids"]
    seqs = group.encode_pairs([SUM] * 4, responses)
    assert any(s[: len(text_ids)] != text_ids for s in seqs), "the text boundary is a token boundary here"
    res = group.score([SUM] * 4, responses)
    assert res.group_prefix_tokens[0] == common_prefix_len(seqs) < len(text_ids)
    assert res.rewards == pytest.approx(full.score([SUM] * 4, responses).rewards, abs=1e-4, rel=1e-4)


def test_shared_tokens_past_the_prompt_are_shared_too(scalar_pair):
    """Responses that begin with the same token extend the group prefix into the response."""
    group, full = scalar_pair
    responses = ["\n19", "\nThe answer is 19.", "\n20"]
    seqs = group.encode_pairs([SUM] * 3, responses)
    prompt_ids = group._tok(
        group._tok.apply_chat_template([{"role": "user", "content": SUM}], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )["input_ids"]
    res = group.score([SUM] * 3, responses)
    assert res.group_prefix_tokens[0] == common_prefix_len(seqs) > len(prompt_ids)
    assert res.rewards == pytest.approx(full.score([SUM] * 3, responses).rewards, abs=1e-4, rel=1e-4)


def test_identical_responses_and_a_one_token_difference(scalar_pair):
    """Identical pairs keep their last token as their own (the score row is computed per pair)."""
    group, full = scalar_pair
    responses = ["19", "19", "19"]
    res = group.score([SUM] * 3, responses)
    assert all(t - L == 1 for t, L in zip(res.tokens, res.group_prefix_tokens))
    assert res.rewards[0] == pytest.approx(res.rewards[1], abs=1e-6)
    assert res.rewards == pytest.approx(full.score([SUM] * 3, responses).rewards, abs=1e-4, rel=1e-4)


# ---- embedded judge -------------------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_judge_group_scores_equal_full_scores():
    """SmolLM2-135M judge (fp32 on CPU): a best-of-4 group over one prompt, group prefix vs
    full scoring; the attention runs on the torch reference (the interpreter would take
    minutes at 30 layers x 9 heads)."""
    from costtax.rewards.base import validate_reward_spec

    try:
        validate_reward_spec("judge")
    except Exception as e:  # pragma: no cover - the weights are a setup step
        pytest.fail(f"the embedded judge is not installed: {e}")
    prompt = "Can you explain, in two or three sentences, why the sky looks blue during the day?"
    responses = [
        "Sunlight is scattered by air molecules, and blue light is scattered much more than red.",
        "Because the ocean reflects onto it.",
        "Rayleigh scattering: shorter wavelengths scatter more strongly, so blue fills the sky.",
        "I don't know.",
    ]
    group = make_reward_model("judge", device="cpu", kernel_path="reference")
    full = make_reward_model("judge", device="cpu", kernel_path="reference", prefix_cache=False)
    try:
        group.load()
        full.load()
        assert group.provenance()["group_prefix"] == "on: cascade"
        a = group.score([prompt] * 4, responses)
        b = full.score([prompt] * 4, responses)
        assert all(L > len(group._prefix_ids) for L in a.group_prefix_tokens)
        _check_accounting(a, group, [prompt] * 4)
    finally:
        group.close()
        full.close()
    assert a.tokens == b.tokens
    assert a.rewards == pytest.approx(b.rewards, abs=2e-3, rel=1e-3)
