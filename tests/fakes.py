"""Deterministic stand-ins for an engine and a reward model (no torch), for fast tests of the
profiler, techniques, accounting and reliability paths. TimedEngine adds a fixed (or, per request
id, a slower) decode time, for the steady-state and technique tests."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from dataclasses import dataclass

from costtax.engines.base import BatchStats, GenResult, Sample


def _h(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class FakeEngine:
    """Words are tokens. Sample k of a request is a deterministic function of the prompt and k.

    Simulated prefix cache: with share_prefix, samples after the first read the whole prompt
    from the cache. `fail_on` makes generate() raise when a rendered prompt contains it.
    """

    name = "fake"

    def __init__(self, words_per_sample: int = 6, max_len: int = 2048, fail_on: str | None = None, seed: int = 0):
        self.words = words_per_sample
        self.max_len = max_len
        self.fail_on = fail_on
        self.seed = seed
        self.started = False
        self.calls = 0
        self.resets = 0
        self.closed = False

    def start(self) -> float:
        self.started = True
        return 0.01

    def render(self, messages, continue_final: bool = False) -> str:
        text = " ".join(f"<{m['role']}> {m['content']}" for m in messages)
        return text if continue_final else text + " <assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def max_model_len(self) -> int:
        return self.max_len

    def reset_prefix_cache(self) -> bool:
        self.resets += 1
        return True

    def last_batch_stats(self) -> BatchStats:
        return BatchStats()

    async def agenerate(self, request, sampling):
        """The async contract: one request, awaited; `delay_s` per output token of simulated
        decode time (0 by default: tests stay fast), slowed by `slow_first` on the first call."""
        assert self.started, "engine not started"
        self.calls += 1
        self.async_calls = getattr(self, "async_calls", 0) + 1
        t0 = time.monotonic()
        res = self._results([request], sampling, t0)[0]
        delay = getattr(self, "delay_s", 0.0) * max(1, res.output_tokens)
        if delay:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        if delay:
            import dataclasses

            t1 = time.monotonic()
            res = dataclasses.replace(res, t_first_token_s=min(t0 + 0.001, t1), t_finish_s=t1)
        return res

    def generate(self, requests, sampling):
        assert self.started, "engine not started"
        self.calls += 1
        return self._results(requests, sampling, time.monotonic())

    def _results(self, requests, sampling, t0):
        out = []
        for req in requests:
            text = self.render(req.messages, continue_final=getattr(req, "continue_final", False))
            if self.fail_on and self.fail_on in text:
                raise RuntimeError(f"fake engine failure on {self.fail_on!r}")
            plen = self.count_tokens(text)
            max_tokens = min(req.max_tokens or sampling.max_tokens, self.max_len - plen)
            samples = []
            for k in range(req.n):
                h = _h(self.seed, text, k)
                n_words = max_tokens if getattr(sampling, "ignore_eos", False) else min(1 + h % self.words, max_tokens)
                words = [f"w{(h >> (i % 24)) % 97}" for i in range(n_words)]
                samples.append(
                    Sample(" ".join(words), tuple(range(n_words)), "length" if n_words == max_tokens else "stop")
                )
            cached = plen * (req.n - 1) if req.share_prefix else 0
            out.append(
                GenResult(
                    request_id=req.request_id,
                    samples=tuple(samples),
                    prompt_tokens=plen,
                    prompt_tokens_computed=plen * req.n - cached,
                    cached_prompt_tokens=cached,
                    t_submit_s=t0,
                    t_first_token_s=t0 + 0.001,
                    t_finish_s=t0 + 0.001 * (1 + sum(s.output_tokens for s in samples)),
                    ttft_source="engine",
                )
            )
        return out

    def provenance(self):
        return {"engine": "fake", "dtype": "none", "prefix_caching": True}

    def close(self) -> None:
        self.closed = True


class TimedEngine(FakeEngine):
    """Every request takes `base_s`; requests matching `slow(request_id)` take `slow_s` instead."""

    def __init__(self, base_s=0.01, slow_s=0.0, slow=lambda rid: False, **kw):
        super().__init__(**kw)
        self.base_s, self.slow_s, self.slow = base_s, slow_s, slow

    async def agenerate(self, request, sampling):
        t0 = time.monotonic()
        res = self._results([request], sampling, t0)[0]
        await asyncio.sleep(self.slow_s if self.slow(request.request_id) else self.base_s)
        t1 = time.monotonic()
        return dataclasses.replace(res, t_first_token_s=t0 + (t1 - t0) / 2, t_finish_s=t1)


@dataclass(frozen=True)
class FakeScore:
    rewards: tuple
    tokens: tuple
    padding_fraction: float = 0.0
    path: str = "fake"
    latency_s: float = 0.0
    cached_tokens: tuple = ()
    computed_tokens: tuple = ()


# The fake reward model reads each pair as "<user> {prompt} <assistant> {response}", as FakeEngine
# renders a one-turn prompt: the prompt's words plus these 2 tags, then the response's words.
FAKE_REWARD_TAGS = 2


def fake_read_tokens(prompt: str, response: str) -> int:
    return len(prompt.split()) + FAKE_REWARD_TAGS + len(response.split())


def fake_computed_tokens(prompts, responses) -> tuple:
    """Shared-prefix scoring as the real reward models count it (rewards/base.py ScoreBatch): a
    run of consecutive pairs with the same prompt computes the prefix (the prompt and its tags)
    once, split evenly over the run's pairs (the first pairs take the remainder), plus each pair's
    own response. So a best-of-N group computes what the waste ratio's minimum counts for it (the
    generation call's prompt once plus each response): a ratio of exactly 1 on FakeEngine."""
    out: list[int] = []
    i = 0
    while i < len(prompts):
        j = i
        while j < len(prompts) and prompts[j] == prompts[i]:
            j += 1
        share, rest = divmod(len(prompts[i].split()) + FAKE_REWARD_TAGS, j - i)
        out += [share + (k < rest) + len(responses[i + k].split()) for k in range(j - i)]
        i = j
    return tuple(out)


class FakeReward:
    """reward = number of distinct words / 10 + a hash jitter; deterministic."""

    def __init__(self, name: str = "fake-reward", fail: bool = False):
        self.name = name
        self.fail = fail
        self.calls = 0

    def load(self) -> float:
        return 0.0

    def score(self, prompts, responses, *, harmful=None):  # no refusal rule: harmful is ignored
        if self.fail:
            raise RuntimeError("fake reward failure")
        self.calls += 1
        rewards = tuple(len(set(r.split())) / 10 + (_h(p, r) % 100) / 1000 for p, r in zip(prompts, responses))
        tokens = tuple(fake_read_tokens(p, r) for p, r in zip(prompts, responses))
        computed = fake_computed_tokens(prompts, responses)
        return FakeScore(rewards, tokens, cached_tokens=tuple(t - c for t, c in zip(tokens, computed)), computed_tokens=computed)

    def provenance(self):
        return {"reward_model": self.name}

    def close(self):
        pass
