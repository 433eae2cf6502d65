"""costtax.report.diversity: distinct-n and self-BLEU, hand cases and a property test."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtax.report.diversity import distinct_n, self_bleu

pytestmark = pytest.mark.unit


def test_distinct_n_hand_cases():
    assert distinct_n(["a a b", "b c"], 1) == pytest.approx(3 / 5)
    # bigrams: (a,a) (a,b) | (b,c) -> 3 unique of 3; n-grams never cross texts.
    assert distinct_n(["a a b", "b c"], 2) == 1.0
    assert distinct_n(["A a", "a"], 1) == pytest.approx(1 / 3)  # lowercased
    assert distinct_n(["a b", "a b"], 2) == 0.5
    assert distinct_n(["a", "b"], 2) is None
    assert distinct_n([], 1) is None
    assert distinct_n(["", "   "], 1) is None
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_self_bleu():
    same = "the quick brown fox jumps over the lazy dog"
    assert self_bleu([same, same, same]) == pytest.approx(100.0)
    disjoint = ["alpha beta gamma delta", "one two three four", "red green blue yellow"]
    assert self_bleu(disjoint) == pytest.approx(0.0, abs=1.0)
    partial = self_bleu(["the cat sat on the mat", "the cat sat on a rug"])
    assert 0.0 < partial < 100.0
    assert self_bleu([same]) is None
    assert self_bleu([same, "", "  "]) is None
    assert self_bleu([]) is None


_word = st.sampled_from(["a", "b", "c", "D", "e"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_word, max_size=8).map(" ".join), max_size=6), st.integers(1, 3))
def test_distinct_n_in_unit_interval(texts, n):
    value = distinct_n(texts, n)
    has_ngrams = any(len(t.split()) >= n for t in texts)
    if has_ngrams:
        assert 0.0 < value <= 1.0
    else:
        assert value is None
