"""Programmatic generator for the ``arith`` prompt set.

The ``arith`` set is the one prompt set with a checkable answer, so it is where
the profiler measures whether an alignment technique changes task accuracy
(for example, whether a Constitutional AI revision pass breaks a correct sum).

Each row is a dict::

    {"id": "arith-000",
     "prompt": "What is 17 + 25? Answer with just the number.",
     "answer": "42",
     "category": "add"}

``category`` is one of ``add``, ``sub``, ``mul`` or ``two_step``. Answers are
exact, non-negative integers written as decimal strings.

Answer rule
-----------
A response is scored correct when the LAST integer that appears in the model's
text equals ``answer``. That extraction is implemented by the scorer, not here;
this module only produces prompts and reference answers. Prompts therefore ask
for "just the number" (or "a number") so that a short reply ends on the answer,
and the generator never produces a negative answer, a fraction, or a number
with thousands separators.

Difficulty
----------
The shipped set uses ``difficulty="easy"``: numbers up to 20, mostly additions
and subtractions, some small multiplications, a few two-step problems, a quarter
phrased as word problems. It was chosen because the embedded SmolLM2-135M-Instruct's
plain accuracy on it fell inside the 20-80% band we aim for and ``"medium"`` (numbers
up to 60) fell below it (measured 2026-11-27, commit 95fb096; that run's directory was
not committed, so its figures are not restated here). ``"hard"`` is for larger models.
Measured accuracy of a committed run: ``bench/results/techniques-cpu-2026-11-27-quiet/``.

The output is fully determined by ``(count, seed, difficulty)``: all
randomness comes from one ``random.Random(seed)``. Standard library only.
"""

from __future__ import annotations

import random

__all__ = [
    "ARITH_DEFAULT_COUNT",
    "ARITH_DEFAULT_SEED",
    "ARITH_CATEGORIES",
    "DIFFICULTIES",
    "generate_arith",
]

ARITH_DEFAULT_COUNT = 120
ARITH_DEFAULT_SEED = 0

ARITH_CATEGORIES = ("add", "sub", "mul", "two_step")

# Per difficulty: share of each category, share of word problems among the
# add/sub/mul rows, and the operand ranges (inclusive).
DIFFICULTIES: dict[str, dict] = {
    "easy": {
        "mix": {"add": 0.45, "sub": 0.35, "mul": 0.15, "two_step": 0.05},
        "word_share": 0.25,
        "add": (1, 20),
        "sub_top": (5, 20),
        "mul": (2, 5),
        "two_step": (1, 10),
    },
    "medium": {
        "mix": {"add": 0.40, "sub": 0.30, "mul": 0.20, "two_step": 0.10},
        "word_share": 0.25,
        "add": (2, 50),
        "sub_top": (10, 60),
        "mul": (2, 9),
        "two_step": (2, 20),
    },
    "hard": {
        "mix": {"add": 0.30, "sub": 0.25, "mul": 0.25, "two_step": 0.20},
        "word_share": 0.30,
        "add": (10, 99),
        "sub_top": (20, 99),
        "mul": (3, 12),
        "two_step": (5, 40),
    },
}

_NAMES = ("Tom", "Maya", "Leo", "Priya", "Sam", "Ana", "Ben", "Zoe", "Omar", "Lily")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps", "shells")

# Word-problem templates. Placeholders: {n} name, {i} plural item, {a} {b} operands.
_WORD_ADD = (
    "{n} has {a} {i} and buys {b} more. How many {i} does {n} have now? Answer with a number.",
    "There are {a} {i} in a box and {b} {i} on the table. How many {i} are there in total? Answer with a number.",
    "{n} collected {a} {i} on Monday and {b} {i} on Tuesday. How many {i} did {n} collect? Answer with a number.",
)
_WORD_SUB = (
    "{n} has {a} {i} and gives away {b}. How many {i} are left? Answer with a number.",
    "A jar holds {a} {i}. {n} takes out {b}. How many {i} are still in the jar? Answer with a number.",
    "{n} had {a} {i} and lost {b} of them. How many {i} does {n} have now? Answer with a number.",
)
_WORD_MUL = (
    "{n} has {a} bags with {b} {i} in each bag. How many {i} are there in all? Answer with a number.",
    "There are {a} rows of {i} with {b} in each row. How many {i} are there? Answer with a number.",
    "{n} buys {a} packs of {i}. Each pack has {b} {i}. How many {i} does {n} buy? Answer with a number.",
)

_BARE_SUFFIX = "Answer with just the number."


def _bare(a: int, op: str, b: int, rng: random.Random) -> str:
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    sym = {"+": "+", "-": "-", "*": "x"}[op]
    style = rng.randrange(3)
    if style == 0:
        return f"What is {a} {sym} {b}? {_BARE_SUFFIX}"
    if style == 1:
        return f"What is {a} {word} {b}? {_BARE_SUFFIX}"
    return f"Calculate {a} {sym} {b}. {_BARE_SUFFIX}"


def _word(templates: tuple[str, ...], a: int, b: int, rng: random.Random) -> str:
    tpl = rng.choice(templates)
    return tpl.format(n=rng.choice(_NAMES), i=rng.choice(_ITEMS), a=a, b=b)


def _make_add(cfg: dict, rng: random.Random, word: bool) -> tuple[str, int]:
    lo, hi = cfg["add"]
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if word:
        a, b = max(a, 2), max(b, 2)
        return _word(_WORD_ADD, a, b, rng), a + b
    return _bare(a, "+", b, rng), a + b


def _make_sub(cfg: dict, rng: random.Random, word: bool) -> tuple[str, int]:
    lo, hi = cfg["sub_top"]
    a = rng.randint(lo, hi)
    b = rng.randint(2 if word else 1, a - 1)  # answer is always >= 1
    if word:
        return _word(_WORD_SUB, a, b, rng), a - b
    return _bare(a, "-", b, rng), a - b


def _make_mul(cfg: dict, rng: random.Random, word: bool) -> tuple[str, int]:
    lo, hi = cfg["mul"]
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if word:
        return _word(_WORD_MUL, a, b, rng), a * b
    return _bare(a, "*", b, rng), a * b


def _make_two_step(cfg: dict, rng: random.Random) -> tuple[str, int]:
    lo, hi = cfg["two_step"]
    mlo, mhi = cfg["mul"]
    kind = rng.randrange(4)
    if kind == 0:  # a + b - c, non-negative
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        c = rng.randint(1, a + b - 1)
        return f"What is {a} + {b} - {c}? {_BARE_SUFFIX}", a + b - c
    if kind == 1:  # a * b + c
        a, b, c = rng.randint(mlo, mhi), rng.randint(mlo, mhi), rng.randint(lo, hi)
        return f"What is {a} x {b} + {c}? {_BARE_SUFFIX}", a * b + c
    n, i = rng.choice(_NAMES), rng.choice(_ITEMS)
    if kind == 2:  # has a, buys b, gives away c
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        c = rng.randint(1, a + b - 1)
        prompt = (
            f"{n} has {a} {i}, buys {b} more, then gives {c} to a friend. "
            f"How many {i} does {n} have now? Answer with a number."
        )
        return prompt, a + b - c
    # kind == 3: a packs of b, plus c loose
    a, b, c = rng.randint(mlo, mhi), rng.randint(mlo, mhi), rng.randint(lo, hi)
    prompt = (
        f"{n} has {a} boxes with {b} {i} in each box, and {c} more {i} outside the boxes. "
        f"How many {i} does {n} have in total? Answer with a number."
    )
    return prompt, a * b + c


def _category_plan(count: int, mix: dict[str, float]) -> list[str]:
    """Exact per-category counts by largest remainder, in a fixed order."""
    raw = {c: count * mix[c] for c in ARITH_CATEGORIES}
    counts = {c: int(raw[c]) for c in ARITH_CATEGORIES}
    short = count - sum(counts.values())
    by_remainder = sorted(ARITH_CATEGORIES, key=lambda c: (-(raw[c] - counts[c]), ARITH_CATEGORIES.index(c)))
    for c in by_remainder[:short]:
        counts[c] += 1
    return [c for c in ARITH_CATEGORIES for _ in range(counts[c])]


def generate_arith(
    count: int = ARITH_DEFAULT_COUNT,
    seed: int = ARITH_DEFAULT_SEED,
    *,
    difficulty: str = "easy",
) -> list[dict]:
    """Return ``count`` arithmetic prompts with exact integer reference answers.

    Rows are ``{"id", "prompt", "answer", "category"}``; ids run ``arith-000``,
    ``arith-001``, ... in output order. The category mix is exact (largest
    remainder of ``count`` times the difficulty's shares) and the order is
    shuffled. Prompts are unique within one call whenever the number ranges
    allow it. Deterministic for a given ``(count, seed, difficulty)``.

    Scoring (done elsewhere): the reference ``answer`` is compared with the
    LAST integer found in the model's response text.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    cfg = DIFFICULTIES[difficulty]
    rng = random.Random(seed)

    plan = _category_plan(count, cfg["mix"])
    rng.shuffle(plan)

    width = max(3, len(str(max(count - 1, 0))))
    rows: list[dict] = []
    seen: set[str] = set()
    for idx, cat in enumerate(plan):
        for _attempt in range(50):
            if cat == "two_step":
                prompt, ans = _make_two_step(cfg, rng)
            else:
                word = rng.random() < cfg["word_share"]
                maker = {"add": _make_add, "sub": _make_sub, "mul": _make_mul}[cat]
                prompt, ans = maker(cfg, rng, word)
            if prompt not in seen:
                break
        seen.add(prompt)
        assert ans >= 0
        rows.append(
            {
                "id": f"arith-{idx:0{width}d}",
                "prompt": prompt,
                "answer": str(ans),
                "category": cat,
            }
        )
    return rows
