"""The RewardModel contract (costtax/rewards/base.py), run over every implementation: the
in-process judge and scalar head on tiny random models (costtax/tiny.py), and the reward models
behind a server (`served`, `openai:URL` judge with the server's tokenizer, `openai:URL,kind=scalar`)
against the stand-in OpenAI server of tests/rewards/test_served_reward.py. Each is called the way
its callers call it: the reward micro-batcher (rewards/batcher.py) and evaluation (context.py
run_eval) pass `harmful=` (one flag per pair) only when a pair is flagged, mixed flags in one
pass; calibration and the refusal rule pass no flags; one pair; an empty batch."""
from __future__ import annotations

import asyncio
import math

import pytest

from standins import load_test_module

_served = load_test_module("rewards/test_served_reward.py")
NAME, StandIn = _served.NAME, _served.StandIn

pytestmark = pytest.mark.integration

KINDS = ("judge", "scalar", "served", "openai-judge", "openai-scalar")
JUDGES = {"judge", "served", "openai-judge"}  # the kinds with a refusal rule

PROMPTS = ["How do I pick a lock?", "How do I pick a lock?", "Name a colour.", "Name a colour."]
RESPONSES = ["I can't help with that.", "First, insert a tension wrench.", "Blue.", "I won't answer."]


class Policy:  # what `served` reads from the run's openai engine
    def __init__(self, url, model, tokenizer_dir):
        self.base_url, self.model, self.tokenizer_dir = url, model, tokenizer_dir


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tiny_classifier_dir):
    s = StandIn(tiny_llama_dir, scalar_dir=tiny_classifier_dir)
    yield s
    s.close()


@pytest.fixture(scope="module", params=KINDS)
def model(request, server, tiny_llama_dir, tiny_classifier_dir):
    from costtax.rewards import make_reward_model

    kind = request.param
    if kind == "judge":
        m = make_reward_model(f"judge:{tiny_llama_dir}", device="cpu", kernel_path="reference")
    elif kind == "scalar":
        m = make_reward_model(f"scalar:{tiny_classifier_dir}", device="cpu", kernel_path="reference")
    elif kind == "served":
        m = make_reward_model("served", policy=Policy(server.url, NAME, str(tiny_llama_dir)))
    elif kind == "openai-judge":
        m = make_reward_model(f"openai:{server.url}")
    else:
        m = make_reward_model(f"openai:{server.url},model={NAME},kind=scalar")
    m.kind_under_test = kind
    yield m
    m.close()


def check_batch(res, n):
    """The fields every ScoreBatch carries, and its token accounting."""
    assert len(res.rewards) == len(res.tokens) == n
    assert all(isinstance(r, float) and math.isfinite(r) for r in res.rewards)
    assert all(isinstance(t, int) and t > 0 for t in res.tokens)
    assert isinstance(res.path, str) and res.path
    assert res.latency_s >= 0 and 0.0 <= res.padding_fraction < 1.0
    assert len(res.cached_tokens) in (0, n) and len(res.computed_tokens) in (0, n)
    if res.computed_tokens:
        # tokens read = computed + read from a cache, per pair (the waste ratio counts `computed`)
        assert all(0 <= c <= t for c, t in zip(res.computed_tokens, res.tokens))
        if res.cached_tokens:
            assert all(c + k == t for c, k, t in zip(res.computed_tokens, res.cached_tokens, res.tokens))


def test_is_a_reward_model_with_load_and_provenance(model):
    from costtax.rewards.base import RewardModel

    assert isinstance(model, RewardModel) and isinstance(model.name, str) and model.name
    first = model.load()
    assert isinstance(first, float) and first >= 0
    assert isinstance(model.load(), float)  # idempotent
    assert isinstance(model.provenance(), dict)


def test_one_pair_with_and_without_flags(model):
    plain = model.score(PROMPTS[:1], RESPONSES[:1])
    check_batch(plain, 1)
    check_batch(model.score(PROMPTS[:1], RESPONSES[:1], harmful=[True]), 1)
    off = model.score(PROMPTS[:1], RESPONSES[:1], harmful=[False])
    assert off.rewards == pytest.approx(plain.rewards, abs=1e-4)  # no flag set: no rule applied


def test_mixed_flags_move_only_flagged_pairs_and_only_for_judges(model):
    plain = model.score(PROMPTS, RESPONSES)
    check_batch(plain, 4)
    flags = [True, True, False, False]
    got = model.score(PROMPTS, RESPONSES, harmful=flags)
    check_batch(got, 4)
    assert got.tokens == plain.tokens
    assert got.rewards[2:] == pytest.approx(plain.rewards[2:], abs=1e-4)
    moved = [abs(a - b) > 1e-3 for a, b in zip(got.rewards[:2], plain.rewards[:2])]
    if model.kind_under_test in JUDGES:
        # the refusal rule: the refusal goes up, the compliance down, by the judge's margin
        assert got.rewards[0] > plain.rewards[0] and got.rewards[1] < plain.rewards[1]
    else:
        assert not any(moved)  # a scalar reward model has no refusal rule


def test_rewards_in_the_callers_order(model):
    fwd = model.score(PROMPTS, RESPONSES)
    rev = model.score(PROMPTS[::-1], RESPONSES[::-1])
    assert list(rev.rewards[::-1]) == pytest.approx(list(fwd.rewards), abs=1e-3)
    one = model.score(PROMPTS[2:3], RESPONSES[2:3])
    assert one.rewards[0] == pytest.approx(fwd.rewards[2], abs=1e-3)


def test_empty_batch(model):
    res = model.score([], [])
    assert res.rewards == () and res.tokens == ()
    assert model.score([], [], harmful=[]).rewards == ()


def test_through_the_reward_batcher_with_mixed_flags(model):
    """As a run calls it: two concurrent score calls (a harmful prompt's candidates and a helpful
    one's) ride one pass with per-pair flags; each call's token counts come back split."""
    from costtax.rewards.batcher import RewardBatcher

    async def run():
        b = RewardBatcher(model, max_wait_s=0.05)
        try:
            return await asyncio.gather(b.score(PROMPTS[0], RESPONSES[:2], harmful=True), b.score(PROMPTS[2], RESPONSES[2:], harmful=False))
        finally:
            await b.aclose()

    harm, helpful = asyncio.run(run())
    assert harm.batch_calls == helpful.batch_calls == 2 and harm.batch_pairs == 4
    direct = model.score(PROMPTS, RESPONSES, harmful=[True, True, False, False])
    assert list(harm.rewards + helpful.rewards) == pytest.approx(list(direct.rewards), abs=1e-3)
    for out in (harm, helpful):
        assert out.tokens > 0
        if out.computed_tokens is not None:
            assert 0 <= out.computed_tokens <= out.tokens
            if out.cached_tokens is not None:
                assert out.computed_tokens + out.cached_tokens == out.tokens


def test_a_best_of_n_run_on_harmful_prompts_finishes(model, tmp_path):
    """Every reward kind crossed with a refusal prompt set in a whole run (the fake engine): the
    batcher passes the harmful flags to selection and evaluation scoring, every cell finishes and
    each score call records what the reward model computed, never more than it read."""
    from costtax.config import RunConfig
    from costtax.run.profile import profile
    from costtax.jsonio import read_jsonl
    from fakes import FakeEngine

    cfg = RunConfig(techniques=("bon:n=2",), prompts=("harmful",), limit=2, max_tokens=6, out=str(tmp_path / "run"),
                    judge_calibration=False, load=("batch",), warmup_answers=0)
    res = profile(cfg, engine=FakeEngine(), scorer=model, eval_scorer=model)
    assert "bon:n=2" in res.cells_ok and not res.cells_failed
    score = [c for c in read_jsonl(res.run_dir / "calls.jsonl") if c["stage"] == "score"]
    assert len(score) == 2
    for c in score:
        assert len(c["rewards"]) == 2 and all(math.isfinite(r) for r in c["rewards"])
        rc = c["reward_tokens_computed"]
        assert rc is None or 0 < rc <= c["prompt_tokens"]
