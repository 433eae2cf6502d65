"""The end-to-end matrix's cells (tests/run/matrix_cells.py): every required pair covered, under
the constraint that only bon and bon_es call a reward model."""
from __future__ import annotations

import pytest

import matrix_cells as mc

pytestmark = pytest.mark.unit


def test_every_cell_is_valid():
    for c in mc.cells():
        assert (c.technique in mc.REWARD_TECHNIQUES) == (c.reward_model != mc.NONE), c
        assert c.technique != "sc" or c.prompts in mc.ANSWERED_PROMPTS, c


def test_every_required_pair_is_covered():
    covered = set()
    for c in mc.cells():
        covered |= mc.pairs(c)
    assert mc.required_pairs() <= covered, sorted(mc.required_pairs() - covered)


def test_every_reward_model_meets_every_prompt_set_and_load_in_a_reward_cell():
    got = {(c.reward_model, c.prompts) for c in mc.cells() if c.technique in mc.REWARD_TECHNIQUES}
    got_load = {(c.reward_model, c.load) for c in mc.cells() if c.technique in mc.REWARD_TECHNIQUES}
    for r in mc.REWARD_MODELS:
        assert {p for rr, p in got if rr == r} == set(mc.PROMPTS), r
        assert {x for rr, x in got_load if rr == r} == set(mc.LOADS), r
    assert ("served_scalar", "harmful") in got  # issue 25: ServedScalar.score lacked harmful=


def test_no_pair_with_a_reward_model_outside_bon():
    # (plain, judge) is not a pair to cover: plain never calls it
    assert ((0, "plain"), (1, "judge")) not in mc.required_pairs()
    assert ((0, "plain"), (1, mc.NONE)) in mc.required_pairs()


def test_the_greedy_choice_is_small_and_stable():
    cells = mc.cells()
    # a lower bound: 16 (reward model x prompts) pairs need a reward cell each, plain and cai one
    # cell per prompt set each (8), sc one per load on arith (2)
    assert len(cells) == 16 + 8 + 2
    assert cells == mc.cells() and len(set(cells)) == len(cells)
