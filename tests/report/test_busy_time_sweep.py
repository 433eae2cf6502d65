"""report/stages.busy_time as a sweep line gives the floats the quadratic definition gave."""
from __future__ import annotations

import random

import pytest

from costtax.report.stages import busy_time

pytestmark = pytest.mark.unit


def reference(intervals, t0, t1):
    """The definition (busy_time before the sweep line): every call tested against every stretch."""
    events = sorted({t0, t1, *(max(t0, min(t1, x)) for a, b, _ in intervals for x in (a, b))})
    out = {"idle": 0.0}
    for a, b in zip(events, events[1:]):
        mid = (a + b) / 2
        active = {s for s0, s1, s in intervals if s0 <= mid < s1}
        if not active:
            out["idle"] += b - a
        for s in active:
            out[s] = out.get(s, 0.0) + (b - a) / len(active)
    return out


def test_equals_the_definition_on_random_calls():
    rng = random.Random(7)
    for _ in range(300):
        t0, t1 = rng.uniform(0, 2), rng.uniform(3, 6)
        iv = []
        for _ in range(rng.randint(0, 40)):
            a = round(rng.uniform(-1, 7), rng.choice([1, 6]))  # rounding makes shared endpoints
            b = a + rng.choice([0.0, -0.5, rng.uniform(0, 2)])  # zero-length and backwards calls too
            iv.append((a, b, rng.choice(["sample", "score", "critique", "revise"])))
        got, want = busy_time(iv, t0, t1), reference(iv, t0, t1)
        assert got == want  # same keys, bit-identical seconds


def test_forty_thousand_calls_in_seconds():
    """A 10k-answer best-of-4 cell's calls (issue 28 measured the definition quadratic)."""
    import time

    rng = random.Random(1)
    iv = []
    for i in range(40000):
        a = i * 0.01 + rng.uniform(0, 0.5)
        iv.append((a, a + rng.uniform(0.05, 2), rng.choice(["sample", "score"])))
    t = time.perf_counter()
    b = busy_time(iv, 0.0, 402.0)
    assert sum(b.values()) == pytest.approx(402.0)
    assert time.perf_counter() - t < 10
