"""Both engines against the Engine contract on a tiny random model.

vLLM tests share one session-scoped engine (marked slow: they start vLLM once)."""
from __future__ import annotations

import pytest

from costtax.engines.base import Engine, GenRequest, SamplingSpec

LONG = "Please explain in detail how the quick brown fox jumps over the lazy dog, step by step. " * 4
MSGS = ({"role": "user", "content": LONG},)


def _check_result(engine, res, req, max_tokens):
    assert res.request_id == req.request_id
    assert len(res.samples) == req.n
    for s in res.samples:
        assert 0 < s.output_tokens <= max_tokens
        assert s.finish_reason in ("stop", "length")
    assert res.prompt_tokens == engine.count_tokens(engine.render(req.messages))
    assert res.output_tokens == sum(s.output_tokens for s in res.samples)
    assert res.t_submit_s <= res.t_finish_s
    if res.t_first_token_s is not None:
        assert res.t_submit_s <= res.t_first_token_s <= res.t_finish_s + 1e-6


@pytest.mark.slow
def test_vllm_contract_and_prefix_sharing(vllm_engine):
    eng = vllm_engine
    assert isinstance(eng, Engine)
    sampling = SamplingSpec(temperature=0.8, max_tokens=8)
    eng.reset_prefix_cache()
    shared = GenRequest("shared", MSGS, n=4, share_prefix=True)
    naive = GenRequest("naive", MSGS + ({"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}), n=4, share_prefix=False)
    single = GenRequest("single", ({"role": "user", "content": "hi"},), n=1, max_tokens=3)
    results = eng.generate([shared, naive, single], sampling)
    assert [r.request_id for r in results] == ["shared", "naive", "single"]
    for req, res in zip([shared, naive, single], results):
        _check_result(eng, res, req, req.max_tokens or 8)
    r_shared, r_naive, r_single = results
    block = eng.provenance()["kv_block_size"]
    assert r_shared.prompt_tokens >= 2 * block  # long enough to hold full cache blocks
    # Shared layout: at most the first sample prefills; the others hit every full block.
    full = (r_shared.prompt_tokens // block) * block
    assert r_shared.cached_prompt_tokens >= (4 - 1) * full - block
    assert r_shared.prompt_tokens_computed == 4 * r_shared.prompt_tokens - r_shared.cached_prompt_tokens
    # Naive layout: distinct cache salts, so no sample reuses another's prefill.
    assert r_naive.cached_prompt_tokens == 0
    assert r_naive.prompt_tokens_computed == 4 * r_naive.prompt_tokens
    assert r_shared.ttft_source == "engine" and r_shared.t_first_token_s is not None
    stats = eng.last_batch_stats()
    assert stats.prefix_cache_hits == r_shared.cached_prompt_tokens + r_naive.cached_prompt_tokens + r_single.cached_prompt_tokens
    # After a reset the same prompt misses again.
    assert eng.reset_prefix_cache()
    again = eng.generate([GenRequest("again", MSGS, n=1)], sampling)[0]
    assert again.cached_prompt_tokens == 0
    prov = eng.provenance()
    assert prov["dtype"] == "float32" and prov["prefix_caching"] is True and prov["engine_start_s"] > 0


@pytest.mark.slow
def test_vllm_rejects_prompt_over_context(vllm_engine):
    huge = ({"role": "user", "content": "word " * 5000},)
    with pytest.raises(ValueError, match="max_model_len"):
        vllm_engine.generate([GenRequest("huge", huge)], SamplingSpec(max_tokens=4))


def test_hf_contract(hf_engine):
    eng = hf_engine
    assert isinstance(eng, Engine)
    reqs = [GenRequest("a", MSGS, n=3), GenRequest("b", ({"role": "user", "content": "hi"},), n=2, max_tokens=3)]
    results = eng.generate(reqs, SamplingSpec(temperature=0.8, max_tokens=6))
    for req, res in zip(reqs, results):
        _check_result(eng, res, req, req.max_tokens or 6)
        assert res.cached_prompt_tokens == 0 and res.prompt_tokens_computed == req.n * res.prompt_tokens
        assert res.ttft_source == "batch"
    assert not eng.reset_prefix_cache()
    # greedy is deterministic
    g = SamplingSpec(temperature=0.0, max_tokens=5)
    t1 = eng.generate([GenRequest("g", MSGS)], g)[0].samples[0].token_ids
    t2 = eng.generate([GenRequest("g", MSGS)], g)[0].samples[0].token_ids
    assert t1 == t2


def test_make_engine_unknown():
    from costtax.engines import make_engine

    with pytest.raises(ValueError, match="valid: vllm, hf"):
        make_engine("tgi", "/x")
