"""Splitting a load level across client worker processes (costtax.load.levels.split_level) and merging
their results (merge_results): slots add up to C, every answer goes to exactly one worker, a rate
level's arrivals are the one Poisson schedule a single process draws."""
from __future__ import annotations

import pytest

from costtax.load.levels import DriveResult, LoadLevel, merge_results, poisson_arrivals, split_level

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("c, workers, n", [(64, 2, 200), (7, 3, 20), (2, 4, 10), (5, 2, 3)])
def test_concurrency_split_keeps_c_slots_and_every_answer_once(c, workers, n):
    items = list(range(n))
    shares = split_level(LoadLevel("concurrency", c), items, workers, seed=0)
    assert 1 <= len(shares) <= min(workers, c, n)
    if len(shares) == min(workers, c):
        assert sum(int(lvl.value) for lvl, _, _ in shares) == c
    assert all(lvl.value >= 1 and offs is None for lvl, _, offs in shares)
    got = sorted(i for _, its, _ in shares for i in its)
    assert got == items
    for _, its, _ in shares:  # admission order kept within a worker
        assert its == sorted(its)


def test_rate_split_deals_one_poisson_schedule():
    items = list(range(101))
    shares = split_level(LoadLevel("rate", 7.5), items, 3, seed=11)
    sched = poisson_arrivals(len(items), 7.5, 11)
    union = sorted((off, i) for _, its, offs in shares for i, off in zip(its, offs))
    assert [i for _, i in union] == items
    assert [off for off, _ in union] == sched
    assert all(lvl == LoadLevel("rate", 7.5) for lvl, _, _ in shares)


def test_batch_is_not_split():
    with pytest.raises(ValueError):
        split_level(LoadLevel("batch"), [1, 2], 2, seed=0)


def test_merge_results():
    a = DriveResult(10, 9, 1, False, 1.0, 5.0, 2.0, 7.0, ["E: x"])
    b = DriveResult(8, 8, 0, True, 0.5, 6.0, 2.5, 6.5, [], stop_reason="oversaturated: y")
    m = merge_results([a, b])
    assert (m.started, m.finished, m.failed, m.timed_out) == (18, 17, 1, True)
    assert (m.t_first_release, m.t_last_release, m.t_first_finish, m.t_last_finish) == (0.5, 6.0, 2.0, 7.0)
    assert m.errors == ["E: x"] and m.stop_reason == "oversaturated: y"
    empty = merge_results([DriveResult(0, 0, 0, False, None, None, None, None, [])])
    assert empty.t_first_release is None

