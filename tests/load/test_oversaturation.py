"""Early stop of a load level (costtax.load.oversaturation through costtax.load.levels.drive): the slope
test, an open-loop level a serial server cannot follow, a steady one it can, and the SLO rule."""
from __future__ import annotations

import asyncio

import pytest

from costtax.load.levels import LoadLevel, drive
from costtax.load.oversaturation import LevelWatch, level_watch, rising, slo_out_of_reach_count, slope_test

pytestmark = pytest.mark.unit


def test_slope_test_on_known_lines():
    xs = [float(i) for i in range(20)]
    slope, t, rise = slope_test(xs, [1 + 0.5 * x + (0.1 if i % 2 else -0.1) for i, x in enumerate(xs)])
    assert slope == pytest.approx(0.5, abs=0.01) and t > 50
    assert rising(xs, [1 + 0.5 * x for x in xs])
    flat = [3 + (0.4 if i % 3 == 0 else -0.2) for i in range(20)]
    assert rising(xs, flat) is None
    assert rising(xs[:5], [1 + x for x in xs[:5]]) is None  # too few points to call


def test_slo_out_of_reach_count_matches_numpy_percentile():
    import numpy as np

    for n in (16, 20, 32, 40, 100):
        k = slo_out_of_reach_count(n)
        vals = [1.0] * (n - k) + [10.0] * k
        assert np.percentile(vals, 95) > 5  # k answers over the SLO put p95 over it ...
        vals = [1.0] * (n - k + 1) + [10.0] * (k - 1)
        assert np.percentile(vals, 95) < 10  # ... and k-1 need not (the rest decide)


def _serial(service_s: float):
    gate = None

    async def run_one(item):
        nonlocal gate
        gate = gate or asyncio.Lock()
        async with gate:
            await asyncio.sleep(service_s)

    return run_one


def test_open_loop_level_a_server_cannot_follow_is_stopped_and_marked():
    level = LoadLevel("rate", 200.0)
    items = list(range(120))
    res = asyncio.run(drive(level, items, _serial(0.02), seed=1, watch=level_watch(level, len(items))))
    st = res.stats(level)
    assert st["oversaturated"] and st["stop_reason"].startswith("oversaturated: answers in flight rose")
    assert 0 < res.finished < len(items)  # stopped early, finished answers kept


def test_steady_open_and_closed_levels_are_not_stopped():
    level = LoadLevel("rate", 20.0)
    res = asyncio.run(drive(level, list(range(40)), _serial(0.005), seed=2, watch=level_watch(level, 40)))
    assert res.finished == 40 and not res.stats(level)["oversaturated"]
    level = LoadLevel("concurrency", 4)

    async def fixed(item):
        await asyncio.sleep(0.01)

    res = asyncio.run(drive(level, list(range(40)), fixed, watch=level_watch(level, 40)))
    assert res.finished == 40 and res.stop_reason is None


def test_closed_loop_latency_that_keeps_rising_is_stopped():
    level = LoadLevel("concurrency", 2)
    n = {"i": 0}

    async def degrading(item):
        n["i"] += 1
        await asyncio.sleep(0.004 * n["i"])

    res = asyncio.run(drive(level, list(range(60)), degrading, watch=level_watch(level, 60)))
    assert res.stop_reason and res.stop_reason.startswith("oversaturated: answer latency rose") and res.finished < 60


def test_slo_rule_only_for_search_probes():
    w = LevelWatch("concurrency", planned=16, concurrency=1, slo_p95_s=0.5, slope=False)
    assert w.finished(0.0, 1.0) is None
    assert w.finished(0.0, 1.0).startswith("slo_out_of_reach: 2 of 16")
    assert level_watch(LoadLevel("batch"), 16) is None
    assert level_watch(LoadLevel("concurrency", 2), 16, slope=False) is None


def test_a_level_stopped_while_a_reward_pass_runs_closes_the_batcher():
    """A stop (or the time cap) that lands while the reward model is mid-pass: aclose() must end
    the batcher's worker, not hang waiting for a queue nobody fills."""
    import time as _time

    from costtax.rewards.batcher import RewardBatcher
    from fakes import FakeReward

    class Slow(FakeReward):
        def score(self, prompts, responses, *, harmful=None):
            _time.sleep(0.3)
            return super().score(prompts, responses)

    async def main():
        b = RewardBatcher(Slow(), max_wait_s=0.001)
        level = LoadLevel("concurrency", 2)
        watch = LevelWatch("concurrency", planned=8, concurrency=2, slo_p95_s=0.01, slope=False)

        async def run_one(item):
            await asyncio.sleep(0.005 * item)
            await b.score("p", ["a", "b"])

        res = await drive(level, list(range(8)), run_one, watch=watch)
        await asyncio.wait_for(b.aclose(), 5)
        return res

    res = asyncio.run(asyncio.wait_for(main(), 20))
    assert res.stop_reason and res.stop_reason.startswith("slo_out_of_reach")
