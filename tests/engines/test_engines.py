"""Both engines against the Engine contract on a tiny random model.

vLLM tests share one session-scoped engine (marked slow: they start vLLM once)."""
from __future__ import annotations

import pytest

from costtax.engines.base import Engine, GenRequest, SamplingSpec

pytestmark = pytest.mark.integration

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
    # The sync path reports the engine's queued -> scheduled time too.
    assert all(r.queue_s is not None and r.queue_s >= 0 for r in results)
    # The offline (LLM class) scheduler defaults, not the server's (128 sequences on CPU).
    assert prov["engine_api"] == "AsyncLLM" and prov["scheduler"]["max_num_seqs"] >= 256
    assert stats.extra["requests_running_peak"] >= 2


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


# --- under load: agenerate, counters, ignore_eos ------------------------------------------------
import asyncio  # noqa: E402
import threading  # noqa: E402

from costtax.engines.base import AsyncEngine  # noqa: E402


def _check_async_result(engine, res, req, max_tokens):
    _check_result(engine, res, req, max_tokens)
    assert res.queue_s is not None and 0.0 <= res.queue_s <= res.t_finish_s - res.t_submit_s + 1e-6


def _load_requests():
    """Distinct prompts, mixed n and max_tokens, submitted concurrently."""
    reqs = [GenRequest("bon", MSGS, n=4)]
    reqs += [GenRequest(f"p{i}", ({"role": "user", "content": f"question {i}: what is {i} + {i}?"},), n=1, max_tokens=4 + i) for i in range(5)]
    return reqs


def _gather(eng, reqs, sampling):
    """All requests submitted at once on one event loop; the engine's counters before and after."""
    c0 = eng.counters()

    async def run():
        return await asyncio.gather(*(eng.agenerate(r, sampling) for r in reqs))

    results = asyncio.run(run())
    return results, c0, eng.counters()


@pytest.mark.slow
def test_vllm_concurrent_agenerate_one_loop(vllm_engine):
    eng = vllm_engine
    assert isinstance(eng, AsyncEngine)
    sampling = SamplingSpec(temperature=0.8, max_tokens=10, ignore_eos=True)
    reqs = _load_requests()
    assert eng.reset_prefix_cache()
    results, c0, c1 = _gather(eng, reqs, sampling)
    for req, res in zip(reqs, results):
        mt = req.max_tokens or 10
        _check_async_result(eng, res, req, mt)
        assert res.ttft_source == "engine" and res.t_first_token_s is not None
        # ignore_eos: fixed-length generation, every sample exactly max_tokens
        assert [s.output_tokens for s in res.samples] == [mt] * req.n
        assert {s.finish_reason for s in res.samples} == {"length"}
    # They ran concurrently on vLLM's scheduler, not one after another: every request had its
    # first token before any request finished.
    assert max(r.t_first_token_s for r in results) < min(r.t_finish_s for r in results)
    # Per-sample prefix-cache hits are exact and add up to the engine's own counter.
    bon = results[0]
    block = eng.provenance()["kv_block_size"]
    assert bon.cached_prompt_tokens >= (4 - 1) * (bon.prompt_tokens // block) * block - block
    assert c1["prefix_cache_hits"] - c0["prefix_cache_hits"] == sum(r.cached_prompt_tokens for r in results)
    assert c1["prefix_cache_queries"] - c0["prefix_cache_queries"] == sum(r.prompt_tokens * len(r.samples) for r in results)
    assert c1["num_requests_running_peak"] >= 2 and 0 < c1["kv_cache_usage_peak"] <= 1
    assert {"kv_cache_usage", "num_requests_running", "num_requests_waiting", "scheduler_steps"} <= set(c1)


@pytest.mark.slow
def test_vllm_agenerate_other_loops_threads_and_cancel(vllm_engine):
    eng = vllm_engine
    sampling = SamplingSpec(temperature=0.0, max_tokens=6)
    req = GenRequest("t", ({"role": "user", "content": "hello there"},), n=2)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("res", asyncio.run(eng.agenerate(req, sampling))))
    th.start()
    th.join(120)
    _check_async_result(eng, box["res"], req, 6)
    # A cancelled request is aborted in vLLM: the engine keeps serving, and a later request does
    # not wait behind the long one.
    long = GenRequest("long", MSGS, n=1, max_tokens=900)

    async def cancel_then_short():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(eng.agenerate(long, SamplingSpec(max_tokens=900, ignore_eos=True)), timeout=0.5)
        t0 = asyncio.get_running_loop().time()
        res = await eng.agenerate(GenRequest("after", MSGS, n=1, max_tokens=2), sampling)
        return res, asyncio.get_running_loop().time() - t0

    res, took = asyncio.run(cancel_then_short())
    assert res.request_id == "after" and took < 30
    assert eng.counters()["num_requests_running"] <= 1
    # bench/fidelity.py's bare-vLLM arm (run_bare_llm, bench/fidelity_overhead.py): no bookkeeping, final outputs only.
    from vllm import SamplingParams

    ids = list(eng._tok.encode(eng.render(MSGS), add_special_tokens=False))
    outs = eng.bare_generate([ids, ids[:10]], SamplingParams(max_tokens=3, ignore_eos=True))
    assert [len(o.outputs[0].token_ids) for o in outs] == [3, 3] and all(o.finished for o in outs)


@pytest.mark.slow
def test_vllm_sampling_params_mapping():
    pytest.importorskip("vllm")
    from costtax.engines.vllm import VllmEngine

    sp = VllmEngine._sampling_params(SamplingSpec(temperature=0.3, top_p=0.9, max_tokens=7, ignore_eos=True), 5)
    assert sp.ignore_eos is True and sp.max_tokens == 5 and sp.n == 1 and sp.temperature == pytest.approx(0.3)
    assert VllmEngine._sampling_params(SamplingSpec(), 5).ignore_eos is False


def test_hf_concurrent_agenerate_batches(hf_engine):
    eng = hf_engine  # max_batch=4 sequences per batch
    assert isinstance(eng, AsyncEngine)
    sampling = SamplingSpec(temperature=0.8, max_tokens=6)
    reqs = _load_requests()  # 4 + 5 sequences
    results, c0, c1 = _gather(eng, reqs, sampling)
    for req, res in zip(reqs, results):
        _check_async_result(eng, res, req, req.max_tokens or 6)
        assert res.cached_prompt_tokens == 0 and res.prompt_tokens_computed == req.n * res.prompt_tokens
    batches = c1["batches"] - c0.get("batches", 0)
    assert batches >= 3  # 9 sequences, at most 4 per batch
    assert c1["batched_requests"] - c0.get("batched_requests", 0) == len(reqs)
    assert c1["batch_seqs_max"] <= 4
    # Batches run one at a time: later batches queued behind earlier ones.
    assert max(r.queue_s for r in results) > min(r.queue_s for r in results)
    # An over-long prompt fails alone, before it joins a batch.
    huge = GenRequest("huge", ({"role": "user", "content": "word " * 5000},))

    async def mixed():
        return await asyncio.gather(eng.agenerate(huge, sampling), eng.agenerate(reqs[1], sampling), return_exceptions=True)

    bad, good = asyncio.run(mixed())
    assert isinstance(bad, ValueError) and "max_model_len" in str(bad)
    assert good.request_id == reqs[1].request_id


def test_hf_ignore_eos_fixed_length(hf_engine, monkeypatch):
    eng = hf_engine
    greedy = SamplingSpec(temperature=0.0, max_tokens=8)
    req = GenRequest("g", MSGS, n=1)
    first = eng.generate([req], greedy)[0].samples[0].token_ids[0]
    # Make the model's first greedy token an EOS: without ignore_eos the sample is cut there.
    monkeypatch.setattr(eng._model.generation_config, "eos_token_id", first)
    stopped = eng.generate([req], greedy)[0].samples[0]
    assert stopped.output_tokens == 0 and stopped.finish_reason == "stop"
    fixed = SamplingSpec(temperature=0.0, max_tokens=8, ignore_eos=True)
    reqs = [GenRequest("a", MSGS, n=2), GenRequest("b", MSGS, n=1, max_tokens=5)]
    for res, mt in zip(eng.generate(reqs, fixed), (8, 5)):
        assert [s.output_tokens for s in res.samples] == [mt] * len(res.samples)
        assert all(s.finish_reason == "length" for s in res.samples)

    async def run():
        return await eng.agenerate(GenRequest("c", MSGS, n=3, max_tokens=7), SamplingSpec(temperature=0.9, max_tokens=8, ignore_eos=True))

    res = asyncio.run(run())
    assert [s.output_tokens for s in res.samples] == [7, 7, 7]
