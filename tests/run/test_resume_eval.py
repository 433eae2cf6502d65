"""Answers a killed session finished but never evaluated get their evaluation (eval reward, and
scores.jsonl for refusal prompts) when --resume reruns their unit: exactly once, under the
answer's session (the reader counts a call or score only there), without regenerating them."""
from __future__ import annotations

from collections import Counter

import pytest

from costtax.config import RunConfig
from costtax.run.profile import RunInterrupted, profile
from costtax.jsonio import read_jsonl
from costtax.store.rundata import RunData
from fakes import FakeEngine, FakeReward

pytestmark = pytest.mark.unit


class DieAtSelection(FakeReward):
    """The evaluation reward model: KeyboardInterrupt at its `at`-th pass (a kill after a unit's
    answers were written, before their evaluation)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def score(self, prompts, responses, *, harmful=None):
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().score(prompts, responses, harmful=harmful)


def test_resume_evaluates_answers_the_killed_session_finished(tmp_path):
    out = tmp_path / "r"
    # pass 0 evaluates plain's unit; pass 1 (bon's) is killed: every bon answer is written, none evaluated
    cfg = RunConfig(techniques=("bon:n=2",), prompts=("helpful", "harmful"), limit=2, out=str(out), judge_calibration=False,
                    score_max_pairs=2, warmup_answers=0)
    ev1 = DieAtSelection(at=1)
    with pytest.raises(RunInterrupted):
        profile(cfg, engine=FakeEngine(), scorer=FakeReward(), eval_scorer=ev1)
    first = {r["answer_id"]: r for r in read_jsonl(out / "answers.jsonl") if r["cell"] == "bon:n=2"}
    assert first, "the interrupt came before any bon answer"
    assert ev1.calls == 1  # plain's unit was evaluated; the bon unit never reached its eval pass
    assert not [c for c in read_jsonl(out / "calls.jsonl") if c["stage"] == "eval" and c["answer_id"] in first]
    sample_calls_before = Counter(c["answer_id"] for c in read_jsonl(out / "calls.jsonl") if c["stage"] != "eval")

    profile(cfg, resume=out, engine=FakeEngine(), scorer=FakeReward(), eval_scorer=FakeReward("fake-eval"))

    answers = {r["answer_id"]: r for r in read_jsonl(out / "answers.jsonl")}
    calls = list(read_jsonl(out / "calls.jsonl"))
    assert len(answers) == len(list(read_jsonl(out / "answers.jsonl")))  # no answer written twice
    assert {a["session"] for a in answers.values() if a["answer_id"] in first} == {r["session"] for r in first.values()}
    # exactly one eval call per answer, under the answer's session
    evals = Counter((c["answer_id"], c["session"]) for c in calls if c["stage"] == "eval")
    assert evals == Counter({(aid, a["session"]): 1 for aid, a in answers.items()})
    resumed = [c for c in calls if c["stage"] == "eval" and c["answer_id"] in first]
    assert resumed and all(c["evaluated_by_session"] not in (None, c["session"]) for c in resumed)
    # generation was not redone: the first session's answers have no calls but their evaluation
    after = Counter(c["answer_id"] for c in calls if c["stage"] != "eval")
    assert all(after[aid] == sample_calls_before[aid] for aid in first)
    # refusal prompts: exactly one scores.jsonl row each, under the answer's session
    harmful = {aid for aid, a in answers.items() if a["prompt_set"] == "harmful"}
    assert harmful & set(first), "no harmful answer was finished by the killed session"
    scored = Counter((r["answer_id"], r["session"]) for r in read_jsonl(out / "scores.jsonl"))
    assert scored == Counter({(aid, answers[aid]["session"]): 1 for aid in harmful})
    # the one reader sees an eval reward and a score for every answer
    run = RunData.open(out)
    assert all(a.eval_reward is not None for a in run.answers)
    assert {s.answer_id for s in run.scores} == harmful
    bon = [u for u in read_jsonl(out / "cells.jsonl") if u["cell"] == "bon:n=2"]
    assert bon[-1]["engine_stats"]["resumed_eval_answers"] == len(first)


def test_resume_scores_without_a_second_eval(tmp_path, monkeypatch):
    """Units that failed in their grading pass (eval rewards written, scores.jsonl not): the
    resumed run grades their answers and writes no second eval call."""
    import costtax.prompts.grading as grading

    out = tmp_path / "r"
    cfg = RunConfig(techniques=("bon:n=2",), prompts=("helpful", "harmful"), limit=2, out=str(out), judge_calibration=False,
                    score_max_pairs=2, warmup_answers=0)
    real = grading.evaluate_answers

    def broken(*a, **k):
        raise RuntimeError("grader down")

    monkeypatch.setattr(grading, "evaluate_answers", broken)
    profile(cfg, engine=FakeEngine(), scorer=FakeReward(), eval_scorer=FakeReward("fake-eval"))
    assert {u["status"] for u in read_jsonl(out / "cells.jsonl")} == {"failed"}
    n_answers = len(list(read_jsonl(out / "answers.jsonl")))
    evals_before = [c for c in read_jsonl(out / "calls.jsonl") if c["stage"] == "eval"]
    assert len(evals_before) == n_answers and not list(read_jsonl(out / "scores.jsonl"))

    monkeypatch.setattr(grading, "evaluate_answers", real)
    ev = FakeReward("fake-eval")
    profile(cfg, resume=out, engine=FakeEngine(), scorer=FakeReward(), eval_scorer=ev)
    assert ev.calls == 0  # every answer already had its eval reward
    assert len(list(read_jsonl(out / "answers.jsonl"))) == n_answers  # nothing regenerated
    assert [c for c in read_jsonl(out / "calls.jsonl") if c["stage"] == "eval"] == evals_before
    answers = {r["answer_id"]: r for r in read_jsonl(out / "answers.jsonl")}
    harmful = {aid for aid, a in answers.items() if a["prompt_set"] == "harmful"}
    scored = Counter((r["answer_id"], r["session"]) for r in read_jsonl(out / "scores.jsonl"))
    assert harmful and scored == Counter({(aid, answers[aid]["session"]): 1 for aid in harmful})
