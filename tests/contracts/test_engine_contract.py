"""The engine contract (costtax/engines/base.py Engine and AsyncEngine), run over every engine:
`hf` and `vllm` on the tiny random Llama (costtax/tiny.py; vLLM shares the session engine and is
marked slow: it starts vLLM), `openai` against the stand-in OpenAI server of
tests/engines/test_openai_engine.py. Each is called as the cell context calls it
(context.py: `agenerate(GenRequest, SamplingSpec)` with the request the techniques build: one
sample, n samples with and without a shared prefix, a max_tokens override, a multi-turn
critique conversation, a continued partial answer, fixed-length sampling, many requests in
flight), and every GenResult field the records read is checked, prefill accounting included."""
from __future__ import annotations

import asyncio
import time

import pytest

from costtax.engines.base import AsyncEngine, Engine, GenRequest, SamplingSpec
from standins import load_test_module

_openai = load_test_module("engines/test_openai_engine.py")
MODEL, FakeServer = _openai.MODEL, _openai.FakeServer

pytestmark = pytest.mark.integration

ENGINES = ("hf", "openai", pytest.param("vllm", marks=pytest.mark.slow))
USER = ({"role": "user", "content": "Explain briefly why the sky is blue to a child."},)
CRITIQUE = (*USER, {"role": "assistant", "content": "Because of light."},
            {"role": "user", "content": "Read your last response. Is it harmful? Rewrite it."})
PARTIAL = (*USER, {"role": "assistant", "content": "The sky is blue because"})
SP = SamplingSpec(temperature=0.7, max_tokens=6, seed=3)


@pytest.fixture(scope="module")
def openai_engine():
    from costtax.engines.openai import OpenAIEngine

    server = FakeServer()
    engine = OpenAIEngine(server.base_url, MODEL)
    engine.start()
    yield engine
    engine.close()
    server.close()


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.getfixturevalue({"hf": "hf_engine", "openai": "openai_engine", "vllm": "vllm_engine"}[request.param])


def _run(engine, *reqs, sampling=SP):
    async def go():
        return await asyncio.gather(*(engine.agenerate(r, sampling) for r in reqs))

    t0 = time.monotonic()
    out = asyncio.run(go())
    return out, t0, time.monotonic()


def check(engine, res, req, sampling, t0, t1):
    """Every field of one result against its request."""
    limit = req.max_tokens or sampling.max_tokens
    assert res.request_id == req.request_id and len(res.samples) == req.n
    for s in res.samples:
        assert 0 <= s.output_tokens <= limit and s.finish_reason in ("stop", "length")
        assert isinstance(s.text, str) and all(isinstance(t, int) for t in s.token_ids)
        if s.finish_reason == "length":
            assert s.output_tokens == limit
        if sampling.ignore_eos:
            assert s.output_tokens == limit and s.finish_reason == "length"
    assert res.output_tokens == sum(s.output_tokens for s in res.samples)
    # the prompt as the engine renders it, counted by the engine (the minimum the waste ratio uses)
    assert res.prompt_tokens == engine.count_tokens(engine.render(req.messages, continue_final=req.continue_final))
    # prefill accounting: computed and cached add up to at most the prompt once per sample
    assert 0 <= res.prompt_tokens_computed <= res.prompt_tokens * req.n
    if res.cached_prompt_tokens is not None:
        assert 0 <= res.cached_prompt_tokens <= res.prompt_tokens * req.n
        assert res.prompt_tokens_computed + res.cached_prompt_tokens <= res.prompt_tokens * req.n
    # one clock (time.monotonic), inside the call
    assert t0 - 1e-3 <= res.t_submit_s <= res.t_finish_s <= t1 + 1e-3
    if res.t_first_token_s is not None:
        assert res.t_submit_s <= res.t_first_token_s <= res.t_finish_s + 1e-6
        assert res.ttft_source in ("engine", "batch", "stream")
    assert res.queue_s is None or res.queue_s >= 0


def test_is_an_engine_with_its_synchronous_api(engine):
    assert isinstance(engine, Engine) and isinstance(engine, AsyncEngine)
    text = engine.render(USER)
    assert isinstance(text, str) and engine.count_tokens(text) > 0
    assert engine.max_model_len() >= 512
    assert isinstance(engine.reset_prefix_cache(), bool)
    assert isinstance(engine.provenance(), dict) and isinstance(engine.counters(), dict)


@pytest.mark.parametrize("n, share", [(1, True), (3, True), (3, False)])
def test_n_samples_with_and_without_a_shared_prefix(engine, n, share):
    req = GenRequest(f"r-{n}-{share}", USER, n=n, share_prefix=share)
    (res,), t0, t1 = _run(engine, req)
    check(engine, res, req, SP, t0, t1)


def test_max_tokens_override_multi_turn_and_continued_answer(engine):
    reqs = [GenRequest("short", USER, max_tokens=2), GenRequest("critique", CRITIQUE),
            GenRequest("continue", PARTIAL, continue_final=True, n=2)]
    out, t0, t1 = _run(engine, *reqs)
    for req, res in zip(reqs, out):
        check(engine, res, req, SP, t0, t1)
    # continuing a partial turn renders no new generation prompt: a different prompt than a new turn
    assert engine.render(PARTIAL, continue_final=True) != engine.render(PARTIAL)


def test_fixed_length_sampling(engine):
    sp = SamplingSpec(temperature=0.7, max_tokens=5, seed=3, ignore_eos=True)
    req = GenRequest("fixed", USER, n=2)
    (res,), t0, t1 = _run(engine, req, sampling=sp)
    check(engine, res, req, sp, t0, t1)


def test_many_requests_in_flight_come_back_to_their_callers(engine):
    reqs = [GenRequest(f"c{i}", ({"role": "user", "content": f"Count to {i + 2}."},), n=1 + i % 2, share_prefix=bool(i % 3))
            for i in range(6)]
    out, t0, t1 = _run(engine, *reqs)
    for req, res in zip(reqs, out):
        check(engine, res, req, SP, t0, t1)
