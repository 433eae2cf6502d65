"""The refusal judge (costtax.rewards.refusal.RefusalJudge): a causal-LM judge asked a refusal
question, its verdicts and thresholds, and evaluate_answers reporting it next to the phrase rule
(the rule itself: tests/rewards/test_refusal_rule.py)."""
from __future__ import annotations

import json

import pytest

from costtax.report.scored_answers import summarize_scored_answers
from costtax.errors import ConfigError
from costtax.prompts import load_source
from costtax.prompts.grading import evaluate_answers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    import torch

    from costtax.tiny import build_tiny_llama

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_tiny_llama(tmp_path_factory.mktemp("refusal_tiny") / "lm")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def judge(tiny_lm):
    from costtax.rewards.refusal import RefusalJudge

    j = RefusalJudge(f"judge:{tiny_lm}", device="cpu", max_batch=4)
    j.load()
    yield j
    j.close()


def test_refusal_judge_uses_the_refusal_template(judge, tiny_lm):
    from costtax.rewards.refusal import COMPLY_QUESTION, REFUSAL_EXAMPLES, REFUSAL_QUESTION, RefusalJudge

    text = judge.model.judging_prompt("How do I boil an egg?", "Boil it for six minutes.")
    assert judge.question == "comply" and COMPLY_QUESTION in text and REFUSAL_EXAMPLES[0][1] in text
    prov = judge.provenance()
    assert prov["judge_examples"] == len(REFUSAL_EXAMPLES) and prov["refusal_threshold"] == 0.0
    # the two questions score the same pairs with opposite orientation of Yes - No
    other = RefusalJudge(f"judge:{tiny_lm}", question="refuse", device="cpu")
    other.load()
    try:
        assert REFUSAL_QUESTION in other.model.judging_prompt("q", "r")
        ps, rs = ["Pick a lock?", "Boil an egg?"], ["I cannot help with that.", "Six minutes."]
        # refusal score: logit(Yes) - logit(No) for "refuse", its negation for "comply"
        assert judge.scores(ps, rs) == pytest.approx([-x for x in judge.model.score(ps, rs).rewards], abs=1e-5)
        assert other.scores(ps, rs) == pytest.approx(list(other.model.score(ps, rs).rewards), abs=1e-5)
    finally:
        other.close()
    with pytest.raises(ConfigError, match="question"):
        RefusalJudge(f"judge:{tiny_lm}", question="maybe")


def test_refusal_judge_verdicts_follow_scores_and_threshold(judge):
    ps, rs = ["Pick a lock?", "Boil an egg?", "Hi"], ["I cannot help with that.", "Six minutes.", "Hello!"]
    scores = judge.scores(ps, rs)
    verdicts = judge.judge(ps, rs)
    assert [v.score for v in verdicts] == pytest.approx(scores)
    assert [v.refusal for v in verdicts] == [s > 0.0 for s in scores]
    judge.threshold = min(scores) - 1.0
    try:
        assert all(v.refusal for v in judge.judge(ps, rs))
    finally:
        judge.threshold = 0.0
    assert judge.scores([], []) == []


def test_refusal_judge_refuses_a_scalar_model(tiny_lm, tmp_path):
    from costtax.rewards.refusal import RefusalJudge
    from costtax.tiny import build_tiny_llama

    cls = build_tiny_llama(tmp_path / "cls", classifier=True)
    with pytest.raises(ConfigError, match="causal-LM judge"):
        RefusalJudge(f"scalar:{cls}")


def test_evaluate_answers_reports_both_scorers_and_their_disagreement(judge):
    harm = load_source("advbench")[:3]
    texts = ["I can't help with that.", "Sure, step one: ...", "Doing that is illegal and unethical."]
    ev = evaluate_answers(harm, texts, judge=judge)
    assert [e["refusal_rule"] for e in ev] == [True, False, True]
    assert all(isinstance(e["refusal_judge"], bool) and isinstance(e["refusal_judge_score"], float) for e in ev)
    s = summarize_scored_answers(ev)
    expect = sum(e["refusal_rule"] != e["refusal_judge"] for e in ev) / 3
    assert s["refusal_rate_rule"] == pytest.approx(2 / 3) and s["refusal_disagreement"] == pytest.approx(expect)
    json.dumps(ev)  # stored per answer: must be JSON


def test_embedded_judge_gets_its_measured_threshold_others_zero(tiny_lm):
    from pathlib import Path

    from costtax.rewards.refusal import RefusalJudge

    # the measured cut: the most accurate threshold on the measure set, recorded by
    # bench/results/refusal-agreement.py (not the constant under test)
    measured = json.loads((Path(__file__).resolve().parents[2] / "bench/results/refusal-agreement-2026-11-27-q-comply.json")
                          .read_text())["judge_threshold_from_measure"]
    j = RefusalJudge("judge")  # built, not loaded: no weights read
    assert j.model.name == "judge:smollm2-135m-instruct"
    assert j.threshold == pytest.approx(measured, abs=5e-4)  # the recorded cut, to the 3 decimals kept
    assert RefusalJudge("judge", question="refuse").threshold == 0.0
    assert RefusalJudge(f"judge:{tiny_lm}").threshold == 0.0
    assert RefusalJudge("judge", threshold=-1.0).threshold == -1.0
