"""The Technique contract (costtax/techniques/base.py), run over every registered technique: each
profiled on the fake engine, batch and closed loop, over helpful, harmful and arithmetic prompts,
with a reward model that holds callers to the RewardModel protocol (`harmful=` keyword only,
one bool per pair, passed only when a pair is flagged). Every answer must pass its technique's
own accounting checks, the selection reward model must be called exactly when the technique
says it needs one, and the row's token accounting must add up from calls.jsonl."""
from __future__ import annotations

import csv

import pytest

from costtax.config import RunConfig
from costtax.run.profile import profile
from costtax.jsonio import read_jsonl
from costtax.techniques import REGISTRY
from fakes import FakeEngine, FakeReward, fake_computed_tokens

pytestmark = pytest.mark.unit

# every registered technique, with parameters that keep the run short; both layouts of bon
CELLS = {"plain": ["plain"], "bon": ["bon:n=3", "bon:n=3,share_prefix=false"], "bon_es": ["bon_es:n=4,checkpoint=2,keep=0.5"],
         "sc": ["sc:n=3"], "cai": ["cai:rounds=2,early_stop=true"]}
PROMPTS = ("helpful", "harmful", "arith")
ANSWER_PROMPTS = ("arith",)  # techniques that vote on final answers need reference answers


def _prompts(cell):
    return ANSWER_PROMPTS if getattr(_technique(cell), "needs_reference_answers", False) else PROMPTS


def test_every_registered_technique_is_covered():
    assert set(CELLS) == set(REGISTRY)


class StrictReward(FakeReward):
    """Fails the call (so the cell) on anything the RewardModel protocol does not allow."""

    def __init__(self):
        super().__init__("strict-reward")
        self.seen: list[tuple[int, tuple | None]] = []

    def score(self, prompts, responses, *, harmful=None):
        assert len(prompts) == len(responses)
        if harmful is not None:
            harmful = tuple(harmful)
            assert len(harmful) == len(prompts) and all(isinstance(h, bool) for h in harmful) and any(harmful)
        self.seen.append((len(prompts), harmful))
        return super().score(prompts, responses)


@pytest.fixture(scope="module", params=[c for cells in CELLS.values() for c in cells])
def run(request, tmp_path_factory):
    cell = request.param
    out = tmp_path_factory.mktemp("technique") / "run"
    cfg = RunConfig(techniques=(cell,), prompts=_prompts(cell), limit=2, max_tokens=8, out=str(out), judge_calibration=False,
                    load=("batch", "concurrency=2"), warmup_answers=0)
    scorer, evaluator = StrictReward(), StrictReward()
    res = profile(cfg, engine=FakeEngine(words_per_sample=6), scorer=scorer, eval_scorer=evaluator)
    rows = [r for r in csv.DictReader(open(res.run_dir / "summary.csv")) if r["cell"] == cell]
    every_call = list(read_jsonl(res.run_dir / "calls.jsonl"))  # the plain baseline's too
    calls = [c for c in every_call if c["cell"] == cell]
    evaluator.eval_calls = sum(1 for c in every_call if c["stage"] == "eval")
    answers = [a for a in read_jsonl(res.run_dir / "answers.jsonl") if a["cell"] == cell]
    return cell, res, rows, calls, answers, scorer, evaluator


def _technique(cell):
    return REGISTRY[cell.split(":")[0]]


def test_every_answer_finishes_and_passes_its_own_accounting(run):
    cell, res, rows, calls, answers, *_ = run
    assert cell in res.cells_ok and not res.cells_failed
    assert {r["load"] for r in rows} == {"batch", "concurrency=2"}
    for r in rows:
        assert int(r["answers"]) == 2 * len(_prompts(cell)) and r["accounting_violations"] == "0", (r["load"], r.get("accounting_example"))
        # client_lag measures the machine the test runs on (a busy CI box lags its event loop), not
        # the technique: every other flag is the technique's own accounting and must stay clear
        flags = {f for f in (r["sanity_flags"] or "").split(";") if f} - {"client_lag"}
        assert not flags, r["sanity_flags"]
    by_answer = {}
    for c in calls:
        by_answer.setdefault(c["answer_id"], []).append(c)
    for a in answers:
        mine = by_answer[a["answer_id"]]
        assert {c["stage"] for c in mine} <= {"sample", "continue", "critique", "revise", "score", "eval"}
        assert sum(1 for c in mine if c["stage"] == "eval") == 1  # every answer evaluated once
        assert a["calls"] == sum(1 for c in mine if c["stage"] != "eval")


def test_selection_reward_model_called_exactly_when_needed_with_the_protocols_flags(run):
    cell, _, _, calls, answers, scorer, evaluator = run
    needs = _technique(cell).needs_reward_model
    score_calls = [c for c in calls if c["stage"] == "score"]
    assert bool(score_calls) == needs and bool(scorer.seen) == needs
    if needs:
        # harmful prompts' candidates were scored with their flag set; no flag reaches a pass without one
        assert any(h is not None for _, h in scorer.seen) == ("harmful" in _prompts(cell))
        assert sum(n for n, _ in scorer.seen) == sum(c["n"] for c in score_calls)
    # evaluation passes the flags the same way
    assert any(h is not None for _, h in evaluator.seen) == ("harmful" in _prompts(cell))
    assert sum(n for n, _ in evaluator.seen) == evaluator.eval_calls >= len(answers)


def test_token_accounting_adds_up_from_the_calls(run):
    cell, _, rows, calls, answers, *_ = run
    for r in rows:
        mine = [c for c in calls if c["load"] == r["load"] and c["stage"] != "eval"]
        n = int(r["answers"])
        score = [c for c in mine if c["stage"] == "score"]
        gen = [c for c in mine if c["stage"] != "score"]
        for c in score:
            # the scorer's own computed count (fake_computed_tokens: the group's prompt once)
            assert c["reward_tokens_computed"] <= c["prompt_tokens"]
        computed = sum(c["prompt_tokens_computed"] + c["output_tokens"] for c in gen)
        computed += sum(c["reward_tokens_computed"] for c in score)
        assert float(r["tokens_computed_per_answer"]) == pytest.approx(computed / n)
        if score:
            want = sum(c["reward_tokens_computed"] for c in score) / n
            assert float(r["stage_score_tokens_per_answer"]) == pytest.approx(want)
            assert float(r["reward_tokens_computed_per_answer"]) == pytest.approx(want)
        else:
            assert r["stage_score_tokens_per_answer"] == "" and r["reward_tokens_computed_per_answer"] == ""
        assert float(r["waste_ratio"]) == pytest.approx(computed / n / float(r["tokens_min_per_answer"]))


def test_fake_computed_tokens_counts_a_shared_prompt_once():
    # "a b c" + 2 tags = 5 prefix tokens over two pairs (3 + 2), "d" + 2 tags = 3 for one pair
    assert fake_computed_tokens(["a b c", "a b c", "d"], ["x", "y z", "w"]) == (3 + 1, 2 + 2, 3 + 1)
