"""The batching worker (costtax/engines/batching.py) against a fake sync engine: no model."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from costtax.engines.base import AsyncEngine, Engine, GenRequest, GenResult, Sample, SamplingSpec
from costtax.engines.batching import BatchingEngine, BatchingWorker, EngineClosed

pytestmark = pytest.mark.unit

SP = SamplingSpec(temperature=0.0, max_tokens=4)
MSG = ({"role": "user", "content": "hi"},)


class SlowFake:
    """Records every generate() call (request ids, sampling, dispatch time); sleeps `delay_s`;
    raises when a request id starts with 'bad'."""

    name = "slowfake"

    def __init__(self, delay_s: float = 0.05):
        self.delay_s = delay_s
        self.calls: list[dict] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self.closed = False

    def start(self) -> float:
        return 0.0

    def render(self, messages):
        return " ".join(m["content"] for m in messages)

    def count_tokens(self, text):
        return len(text.split())

    def max_model_len(self):
        return 100

    def reset_prefix_cache(self):
        return False

    def last_batch_stats(self):
        from costtax.engines.base import BatchStats

        return BatchStats()

    def provenance(self):
        return {"engine": self.name}

    def close(self):
        self.closed = True

    def generate(self, requests, sampling):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        t0 = time.monotonic()
        self.calls.append({"ids": [r.request_id for r in requests], "sampling": sampling, "t": t0, "seqs": sum(r.n for r in requests)})
        try:
            time.sleep(self.delay_s)
            if any(r.request_id.startswith("bad") for r in requests):
                raise RuntimeError("boom in batch")
            t1 = time.monotonic()
            return [
                GenResult(
                    request_id=r.request_id,
                    samples=tuple(Sample(f"{r.request_id}-{k}", (1, 2), "length") for k in range(r.n)),
                    prompt_tokens=1,
                    prompt_tokens_computed=r.n,
                    cached_prompt_tokens=0,
                    t_submit_s=t0,
                    t_first_token_s=t0 + self.delay_s / 2,
                    t_finish_s=t1,
                    ttft_source="batch",
                )
                for r in requests
            ]
        finally:
            with self._lock:
                self.active -= 1


def _req(rid: str, n: int = 1) -> GenRequest:
    return GenRequest(rid, MSG, n=n)


async def _gather(eng, reqs, sampling=SP, return_exceptions=False):
    return await asyncio.gather(*(eng.agenerate(r, sampling) for r in reqs), return_exceptions=return_exceptions)


def test_batches_fill_up_to_max_batch_and_results_match_requests():
    fake = SlowFake(delay_s=0.05)
    eng = BatchingEngine(fake, max_batch=4, max_wait_ms=500)
    assert isinstance(eng, Engine) and isinstance(eng, AsyncEngine)
    try:
        reqs = [_req(f"r{i}") for i in range(10)]
        results = asyncio.run(_gather(eng, reqs))
    finally:
        eng.close()
    assert [r.request_id for r in results] == [r.request_id for r in reqs]
    for req, res in zip(reqs, results):
        assert [s.text for s in res.samples] == [f"{req.request_id}-0"]
    # All 10 were queued long before the 500 ms wait ran out: full batches, in arrival order.
    assert [c["ids"] for c in fake.calls] == [["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "r7"], ["r8", "r9"]]
    assert fake.max_active == 1  # one batch at a time
    c = eng.counters()
    assert c["batches"] == 3 and c["batched_requests"] == 10 and c["batched_seqs"] == 10 and c["batch_seqs_max"] == 4
    assert c["num_requests_waiting"] == 0 and c["num_requests_running"] == 0
    assert fake.closed


def test_max_batch_counts_samples_and_big_requests_go_alone():
    fake = SlowFake(delay_s=0.01)
    eng = BatchingEngine(fake, max_batch=4, max_wait_ms=300)
    try:
        reqs = [_req("a", n=3), _req("b", n=2), _req("c", n=1), _req("big", n=6), _req("d", n=1)]
        results = asyncio.run(_gather(eng, reqs))
    finally:
        eng.close()
    assert [len(r.samples) for r in results] == [3, 2, 1, 6, 1]
    # a (3) + b (2) would exceed 4 sequences: a goes alone; b + c = 3, big (6) does not fit;
    # big goes alone (bigger than a batch); then d.
    assert [c["ids"] for c in fake.calls] == [["a"], ["b", "c"], ["big"], ["d"]]
    assert all(c["seqs"] <= 4 for c in fake.calls if c["ids"] != ["big"])


def test_max_wait_is_honoured_and_queue_s_recorded():
    fake = SlowFake(delay_s=0.0)
    wait_ms = 150
    eng = BatchingEngine(fake, max_batch=8, max_wait_ms=wait_ms)
    try:
        t0 = time.monotonic()
        res = asyncio.run(_gather(eng, [_req("lonely")]))[0]
    finally:
        eng.close()
    # A lone request waits for company until max_wait runs out, then goes.
    assert len(fake.calls) == 1
    dispatch = fake.calls[0]["t"]
    assert wait_ms / 1000 - 0.005 <= dispatch - t0 < wait_ms / 1000 + 1.0  # generous: shared CPU
    assert res.t_submit_s >= t0 and res.queue_s == pytest.approx(dispatch - res.t_submit_s, abs=0.002)
    assert res.queue_s >= wait_ms / 1000 - 0.005
    assert res.t_submit_s <= res.t_first_token_s <= res.t_finish_s


def test_zero_wait_dispatches_at_once_and_queue_builds_while_a_batch_runs():
    fake = SlowFake(delay_s=0.2)
    eng = BatchingEngine(fake, max_batch=8, max_wait_ms=0)

    async def staggered():
        first = asyncio.ensure_future(eng.agenerate(_req("first"), SP))
        await asyncio.sleep(0.05)  # "first" is running now; these three queue behind it
        rest = [asyncio.ensure_future(eng.agenerate(_req(f"late{i}"), SP)) for i in range(3)]
        await asyncio.sleep(0.02)
        mid = eng.counters()
        return await first, await asyncio.gather(*rest), mid

    try:
        first, late, mid = asyncio.run(staggered())
    finally:
        eng.close()
    assert mid["num_requests_running"] == 1 and mid["num_requests_waiting"] == 3
    assert [c["ids"] for c in fake.calls] == [["first"], ["late0", "late1", "late2"]]
    assert first.queue_s < 0.1  # no waiting for company with max_wait_ms=0
    # The late ones waited for the running batch: queue_s covers that (about 0.2 - 0.05 s).
    for r in late:
        assert r.queue_s >= 0.1
        assert r.queue_s == pytest.approx(fake.calls[1]["t"] - r.t_submit_s, abs=0.002)


def test_exception_fails_only_its_batch():
    fake = SlowFake(delay_s=0.02)
    eng = BatchingEngine(fake, max_batch=2, max_wait_ms=300)
    try:
        reqs = [_req("a"), _req("bad-b"), _req("c"), _req("d")]
        results = asyncio.run(_gather(eng, reqs, return_exceptions=True))
        # the worker survives: a later request still runs
        after = asyncio.run(_gather(eng, [_req("e")]))[0]
    finally:
        eng.close()
    assert [c["ids"] for c in fake.calls][:2] == [["a", "bad-b"], ["c", "d"]]
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
    assert "boom" in str(results[0])
    assert [r.request_id for r in results[2:]] == ["c", "d"]
    assert after.request_id == "e"
    c = eng.counters()
    assert c["failed_batches"] == 1 and c["batches"] == 2


def test_different_sampling_never_shares_a_batch():
    fake = SlowFake(delay_s=0.01)
    eng = BatchingEngine(fake, max_batch=8, max_wait_ms=200)
    other = SamplingSpec(temperature=0.5, max_tokens=4)
    try:

        async def mixed():
            return await asyncio.gather(
                eng.agenerate(_req("x1"), SP), eng.agenerate(_req("y1"), other), eng.agenerate(_req("x2"), SP)
            )

        asyncio.run(mixed())
    finally:
        eng.close()
    assert [(c["ids"], c["sampling"]) for c in fake.calls] == [(["x1", "x2"], SP), (["y1"], other)]


def test_awaitable_from_several_loops_and_threads_and_sync_generate_serialised():
    fake = SlowFake(delay_s=0.05)
    eng = BatchingEngine(fake, max_batch=4, max_wait_ms=20)
    out: dict[str, object] = {}
    try:
        t = threading.Thread(target=lambda: out.setdefault("thread", asyncio.run(_gather(eng, [_req("t1"), _req("t2")]))))
        t.start()
        out["sync"] = eng.generate([_req("s1")], SP)
        out["main"] = asyncio.run(_gather(eng, [_req("m1")]))
        t.join(10)
    finally:
        eng.close()
    assert [r.request_id for r in out["thread"]] == ["t1", "t2"]
    assert [r.request_id for r in out["sync"]] == ["s1"] and out["sync"][0].queue_s is None
    assert [r.request_id for r in out["main"]] == ["m1"]
    assert fake.max_active == 1  # sync generate and the worker's batches never overlap


def test_cancelled_request_is_skipped_and_close_fails_queued_ones():
    fake = SlowFake(delay_s=0.3)
    worker = BatchingWorker(fake.generate, max_batch=1, max_wait_ms=0)
    f1 = worker.submit(_req("run"), SP)
    time.sleep(0.05)  # "run" is generating
    f2 = worker.submit(_req("cancel-me"), SP)
    f3 = worker.submit(_req("queued"), SP)
    assert f2.cancel()
    worker.close(timeout=5)
    assert f1.result(timeout=5).request_id == "run"  # a running batch finishes
    assert f2.cancelled()
    with pytest.raises(EngineClosed):
        f3.result(timeout=1)
    assert [c["ids"] for c in fake.calls] == [["run"]]
    with pytest.raises(EngineClosed):
        worker.submit(_req("late"), SP)


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_wait_ms": -1}])
def test_bad_settings_rejected(kwargs):
    with pytest.raises(ValueError):
        BatchingWorker(lambda reqs, sp: [], **kwargs)
