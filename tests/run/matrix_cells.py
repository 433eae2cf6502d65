"""The end-to-end matrix's cells (tests/run/test_matrix_vllm.py), chosen pairwise under constraints.

Factors: technique x reward model x prompts x load. Only bon and bon_es call a reward model, so
a reward-model value counts as met only in a cell whose technique is one of them; the other
techniques carry reward model NONE. sc votes on final answers, so it runs only on prompts with a
reference answer (arith; costtax's preflight refuses the others). A pair of values is required when some valid cell holds it:
every (reward model, prompts), (reward model, load) and (reward model, bon | bon_es) pair, and
every pair among technique, prompts and load. `cells()` picks valid cells greedily (the one that
covers most required pairs not yet covered; ties: the first in factor order), so the list is
deterministic; test_matrix_cells.py checks that it covers every required pair and that the
required cell (served scalar x harmful, issue 25's crash) is there.
"""
from __future__ import annotations

from itertools import combinations, product
from typing import NamedTuple

TECHNIQUES = ("plain", "bon:n=4", "bon_es", "sc", "cai")
REWARD_TECHNIQUES = frozenset({"bon:n=4", "bon_es"})
# sc votes on final answers: it needs prompts with a reference answer (preflight refuses others)
ANSWERED_PROMPTS = frozenset({"arith"})
REWARD_MODELS = ("judge", "served_judge", "scalar_local", "served_scalar")
NONE = "-"
PROMPTS = ("helpful", "harmful", "arith", "humaneval")
LOADS = ("batch", "concurrency=2")
FACTORS = ("technique", "reward_model", "prompts", "load")


class Cell(NamedTuple):
    technique: str
    reward_model: str
    prompts: str
    load: str

    @property
    def id(self) -> str:
        return f"{self.technique}|{self.reward_model}|{self.prompts}|{self.load}"


def valid_cells() -> list[Cell]:
    """Every cell the constraints allow, in factor order."""
    out = []
    for t, r, p, load in product(TECHNIQUES, REWARD_MODELS + (NONE,), PROMPTS, LOADS):
        if (t in REWARD_TECHNIQUES) == (r != NONE) and (t != "sc" or p in ANSWERED_PROMPTS):
            out.append(Cell(t, r, p, load))
    return out


def pairs(cell: Cell) -> set[tuple[tuple[int, str], tuple[int, str]]]:
    """The cell's value pairs, each value tagged with its factor's index."""
    return {((i, cell[i]), (j, cell[j])) for i, j in combinations(range(len(FACTORS)), 2)}


def required_pairs() -> set:
    out: set = set()
    for c in valid_cells():
        out |= pairs(c)
    return out


def cells() -> list[Cell]:
    """A small set of valid cells covering every required pair (greedy, deterministic)."""
    todo = required_pairs()
    pool = valid_cells()
    chosen: list[Cell] = []
    while todo:
        best = max(pool, key=lambda c: len(pairs(c) & todo))  # max keeps the first of equals
        chosen.append(best)
        todo -= pairs(best)
        pool.remove(best)
    return chosen


if __name__ == "__main__":
    for c in cells():
        print(c.id)
