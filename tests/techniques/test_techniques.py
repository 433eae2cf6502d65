"""The techniques (costtax/techniques/): each one's per-answer program run directly on a CellContext
with a scripted engine and reward (which calls, with what n, what gets picked, when a loop stops),
their accounting checks, parameter schemas and the registry; then a few whole-profile runs on the
fake engine (CAI early stop and context overflow, self-consistency, early-stopping best-of-N)."""
from __future__ import annotations

import asyncio
import csv
import dataclasses
import json

import pytest

from costtax.config import RunConfig, parse_technique_spec
from costtax.techniques.constitution import load_constitution
from costtax.techniques.context import CellContext
from costtax.engines.base import Sample, SamplingSpec
from costtax.errors import ConfigError
from costtax.run.profile import profile
from costtax.prompts import Prompt
from costtax.store.records import to_json_dict
from costtax.jsonio import read_jsonl
from costtax.techniques import REGISTRY, get_technique
from costtax.techniques.best_of_n import BestOfN
from costtax.techniques.cai import ConstitutionalAI
from costtax.techniques.early_stop_bon import EarlyStopBestOfN, top_k_indices
from costtax.techniques.plain import Plain
from costtax.techniques.self_consistency import SelfConsistency, extract_vote, majority
from fakes import FakeEngine, FakeReward, TimedEngine

pytestmark = pytest.mark.unit

PROMPT = Prompt("p1", "How do I boil an egg?", "helpful")
ARITH = Prompt("a1", "What is 1 + 2?", "arith", answer="3")


# -- harness: one answer on a CellContext --------------------------------------------------------
class _Rows:
    def __init__(self):
        self.calls, self.answers = [], []

    def call(self, rec):
        self.calls.append(rec)

    def answer(self, rec):
        self.answers.append(rec)


def _sample(text: str, finish: str = "stop") -> Sample:
    return Sample(text, tuple(range(len(text.split()))), finish)


class ScriptedEngine(FakeEngine):
    """FakeEngine whose samples come from `script(request)`: a list of texts (finish "stop") or
    (text, finish_reason) pairs, one per sample. Words are tokens. Every request is kept."""

    def __init__(self, script, **kw):
        super().__init__(**kw)
        self.script = script
        self.requests = []

    def _results(self, requests, sampling, t0):
        out = []
        for req, res in zip(requests, super()._results(requests, sampling, t0)):
            self.requests.append(req)
            got = [(s, "stop") if isinstance(s, str) else s for s in self.script(req)]
            assert len(got) == req.n, (req, got)
            out.append(dataclasses.replace(res, samples=tuple(_sample(t, f) for t, f in got)))
        return out


class TableReward(FakeReward):
    """reward = table[response] (0.0 for a response not in the table)."""

    def __init__(self, table):
        super().__init__("table-reward")
        self.table = table

    def score(self, prompts, responses, *, harmful=None):
        res = super().score(prompts, responses)
        return dataclasses.replace(res, rewards=tuple(float(self.table.get(r, 0.0)) for r in responses))


def run_answer(technique, engine, *, prompt=PROMPT, scorer=None, options=None, max_tokens=16):
    """Run technique.answer() for one prompt; the answer row and its call rows as the run
    directory holds them (plain dicts), plus the engine's requests."""
    rows = _Rows()
    engine.start()
    ctx = CellContext(run_id="r", cell=technique.name, technique=technique.name, engine=engine,
                      sampling=SamplingSpec(max_tokens=max_tokens), writer=rows, epoch=0.0, scorer=scorer, options=options)
    inst = ctx.expand([prompt])[0]

    async def go():
        try:
            await technique.answer(inst, ctx)
        finally:
            if ctx.batcher is not None:
                await ctx.batcher.aclose()

    asyncio.run(go())
    [answer] = rows.answers
    return to_json_dict(answer), [to_json_dict(c) for c in rows.calls], engine.requests


def stages(calls):
    return [(c["stage"], c["n"], c["round"]) for c in calls]


# -- plain --------------------------------------------------------------------------------------
def test_plain_is_one_sample_call_of_n1():
    engine = ScriptedEngine(lambda req: ["Boil it for six minutes."])
    answer, calls, requests = run_answer(Plain(), engine)
    assert len(requests) == 1 and requests[0].n == 1 and requests[0].messages == PROMPT.messages()
    assert stages(calls) == [("sample", 1, None)]
    assert answer["text"] == "Boil it for six minutes." and not answer["truncated"]
    assert answer["calls"] == 1 and answer["output_tokens"] == 5 and answer["selection_reward"] is None
    assert Plain().check(answer, calls) == []


def test_plain_truncated_follows_the_finish_reason_and_check_catches_extra_calls():
    answer, calls, _ = run_answer(Plain(), ScriptedEngine(lambda req: [("cut off", "length")]))
    assert answer["truncated"]
    assert Plain().check(answer, calls + [dict(calls[0], stage="critique")])  # a second call is a violation
    assert Plain().check(answer, [dict(calls[0], n=2)])  # so is n=2
    assert Plain().check(answer, calls + [dict(calls[0], stage="eval")]) == []  # evaluation is not the technique's


# -- best-of-N ------------------------------------------------------------------------------------
CANDIDATES = ["a", "b b", ("c c c", "length"), "d d d d"]


def test_bon_picks_the_highest_reward_and_accounts_all_n_samples():
    rewards = {"a": 0.1, "b b": 0.5, "c c c": 0.9, "d d d d": 0.3}
    engine = ScriptedEngine(lambda req: CANDIDATES)
    answer, calls, requests = run_answer(BestOfN(n=4), engine, scorer=TableReward(rewards))
    assert [(r.n, r.share_prefix) for r in requests] == [(4, True)]  # one request of N samples
    assert stages(calls) == [("sample", 4, None), ("score", 4, None)]
    ex = answer["extra"]
    assert ex["selected_index"] == 2 and answer["text"] == "c c c"  # not the first, not the last
    assert answer["selection_reward"] == pytest.approx(0.9) and answer["candidate_rewards"] == pytest.approx([0.1, 0.5, 0.9, 0.3])
    assert answer["truncated"]  # the chosen candidate's finish reason
    # cost: all N candidates' tokens, and the reward model's tokens for all N
    assert answer["output_tokens"] == 1 + 2 + 3 + 4 and ex["candidate_output_tokens"] == [1, 2, 3, 4]
    assert answer["reward_tokens"] == calls[1]["prompt_tokens"] > 0
    assert calls[1]["rewards"] == pytest.approx([0.1, 0.5, 0.9, 0.3])
    assert answer["candidate_texts"] == ["a", "b b", "c c c", "d d d d"]
    assert BestOfN(n=4).check(answer, calls) == []


def test_bon_ties_go_to_the_first_and_share_prefix_false_reaches_the_engine():
    rewards = {"a": 0.2, "b b": 0.7, "c c c": 0.7, "d d d d": 0.1}
    engine = ScriptedEngine(lambda req: CANDIDATES)
    answer, calls, requests = run_answer(BestOfN(n=4, share_prefix=False), engine, scorer=TableReward(rewards))
    assert answer["extra"]["selected_index"] == 1 and answer["text"] == "b b"
    assert requests[0].share_prefix is False and calls[0]["extra"]["share_prefix"] is False


def test_bon_needs_a_reward_model_and_check_wants_n_everywhere():
    with pytest.raises(RuntimeError, match="needs a reward model"):
        run_answer(BestOfN(n=4), ScriptedEngine(lambda req: CANDIDATES))
    answer, calls, _ = run_answer(BestOfN(n=4), ScriptedEngine(lambda req: CANDIDATES), scorer=TableReward({}))
    problems = BestOfN(n=3).check(answer, calls)
    assert len(problems) == 2 and "n=3" in problems[0] and "over 3 candidates" in problems[1]
    assert BestOfN(n=4).check(answer, calls[:1])  # the score call missing


# -- early-stopping best-of-N -------------------------------------------------------------------------
def _bon_es_script(req):
    if not req.continue_final:  # phase 1: N samples capped at the checkpoint
        return [("a1 a2 a3", "length"), ("b1 b2 b3", "length"), ("c1", "stop"), ("d1 d2 d3", "length")]
    assert req.messages[-1] == {"role": "assistant", "content": "b1 b2 b3"}  # only b is unfinished and kept
    return ["b4 b5"]


def test_bon_es_keeps_the_top_partial_scores_continues_only_unfinished_ones_and_picks_the_final_best():
    partial_and_final = {"a1 a2 a3": 0.1, "b1 b2 b3": 0.9, "c1": 0.8, "d1 d2 d3": 0.5,  # partial: keep b, c
                         "b1 b2 b3b4 b5": 0.2}  # final: c wins (the continuation is appended as it came)
    engine = ScriptedEngine(_bon_es_script)
    tech = EarlyStopBestOfN(n=4, checkpoint=3, keep=0.5)
    answer, calls, requests = run_answer(tech, engine, scorer=TableReward(partial_and_final), max_tokens=8)
    assert [(r.n, r.max_tokens, r.continue_final) for r in requests] == [(4, 3, False), (1, 8 - 3, True)]
    assert stages(calls) == [("sample", 4, None), ("score", 4, None), ("continue", 1, 2), ("score", 2, None)]
    ex = answer["extra"]
    assert ex["kept_indices"] == [1, 2] and ex["top_partial_index"] == 1
    assert ex["selected_index"] == 2 and answer["text"] == "c1" and answer["selection_reward"] == pytest.approx(0.8)
    assert answer["candidate_texts"] == ["b1 b2 b3b4 b5", "c1"]
    assert ex["discarded_tokens"] == 3 + 3 and ex["continued_tokens"] == 2  # a and d dropped; b's two more tokens
    assert answer["output_tokens"] == 3 + 3 + 1 + 3 + 2
    assert tech.check(answer, calls) == []
    assert tech.check(answer, [c for c in calls if c["stage"] != "continue"])  # continued_tokens no longer add up


def test_bon_es_checkpoint_past_the_budget_continues_nothing():
    engine = ScriptedEngine(lambda req: [("w w w w", "length")] * req.n)
    tech = EarlyStopBestOfN(n=3, checkpoint=32, keep=1.0)
    answer, calls, requests = run_answer(tech, engine, scorer=TableReward({}), max_tokens=4)
    assert [r.max_tokens for r in requests] == [4]  # the checkpoint is capped by --max-tokens
    assert [c["stage"] for c in calls] == ["sample", "score", "score"]  # no room left: no continuation
    assert answer["extra"]["continued_tokens"] == 0 and answer["truncated"]
    assert tech.check(answer, calls) == []


@pytest.mark.parametrize("n, keep, kept", [(16, 0.25, 4), (4, 0.0001, 1), (5, 1.0, 5), (10, 0.35, 4), (100, 0.07, 7), (100, 0.28, 28)])
def test_bon_es_kept_is_ceil_of_keep_times_n_without_float_noise(n, keep, kept):
    # 0.07 * 100 is 7.000000000000001 in floats: a bare ceil would keep 8
    assert EarlyStopBestOfN(n=n, keep=keep).kept == kept


def test_top_k_indices_ties_to_the_lower_index():
    assert top_k_indices([0.1, 0.9, 0.5, 0.9], 2) == [1, 3]
    assert top_k_indices([0.3, 0.3, 0.3], 1) == [0]
    assert top_k_indices([0.5, 0.1, 0.9], 2) == [0, 2]  # returned in index order, not rank order


# -- Constitutional AI ------------------------------------------------------------------------------
def _cai_script(no_changes_at=None):
    """Each turn's text names the conversation length it answers; the critique asked with
    `no_changes_at` messages in the conversation says NO CHANGES NEEDED."""

    def script(req):
        k = len(req.messages)
        return ["No changes needed." if k == no_changes_at else f"turn {k}"]

    return script


def test_cai_rounds_of_critique_then_revise_over_a_growing_conversation():
    engine = ScriptedEngine(_cai_script())
    answer, calls, requests = run_answer(ConstitutionalAI(rounds=2), engine, max_tokens=8)
    assert stages(calls) == [("sample", 1, None), ("critique", 1, 1), ("revise", 1, 1), ("critique", 1, 2), ("revise", 1, 2)]
    assert [len(r.messages) for r in requests] == [1, 3, 5, 7, 9]  # every turn sees all earlier turns
    principles = {p.id: p for p in load_constitution(None).principles}
    ex = answer["extra"]
    assert ex["rounds"] == 2 and not ex["stopped_early"] and len(ex["principles"]) == 2
    for rnd, pid in enumerate(ex["principles"]):
        crit, rev = requests[1 + 2 * rnd], requests[2 + 2 * rnd]
        assert crit.messages[-1]["content"] == principles[pid].critique and rev.messages[-1]["content"] == principles[pid].revision
    assert answer["text"] == "turn 9" and ex["initial_text"] == "turn 1"  # the last revision is the answer
    assert ex["critiques"] == ["turn 3", "turn 7"] and ex["revisions_changed"] == [True, True]
    assert ex["conversation_turns"] == 10 and not answer["truncated"]
    assert ConstitutionalAI(rounds=2).check(answer, calls) == []
    assert ConstitutionalAI(rounds=2).check(answer, calls[:-1])  # a missing revision is a violation


def test_cai_early_stop_ends_the_loop_without_a_revision():
    # round 2's critique (asked over 7 messages) says no changes are needed, in lower case
    answer, calls, _ = run_answer(ConstitutionalAI(rounds=3, early_stop=True), ScriptedEngine(_cai_script(no_changes_at=7)))
    assert [c["stage"] for c in calls] == ["sample", "critique", "revise", "critique"]
    ex = answer["extra"]
    assert ex["stopped_early"] and ex["rounds"] == 2 and answer["text"] == "turn 5"  # round 1's revision stands
    assert ex["critiques"] == ["turn 3", "No changes needed."] and ex["revisions_changed"] == [True]
    assert ConstitutionalAI(rounds=3, early_stop=True).check(answer, calls) == []
    # without early_stop the same critique is just a critique: every round runs
    answer, calls, _ = run_answer(ConstitutionalAI(rounds=3), ScriptedEngine(_cai_script(no_changes_at=7)))
    assert len(calls) == 1 + 2 * 3 and not answer["extra"]["stopped_early"] and answer["extra"]["rounds"] == 3


def test_cai_zero_rounds_is_plain_and_principles_follow_the_seed():
    answer, calls, _ = run_answer(ConstitutionalAI(rounds=0), ScriptedEngine(_cai_script()))
    assert [c["stage"] for c in calls] == ["sample"] and answer["text"] == answer["extra"]["initial_text"] == "turn 1"
    assert ConstitutionalAI(rounds=0).check(answer, calls) == []

    def principles(seed):
        a, _, _ = run_answer(ConstitutionalAI(rounds=4), ScriptedEngine(_cai_script()), options={"seed": seed})
        return a["extra"]["principles"]

    assert principles(0) == principles(0)  # a rerun picks the same principles
    assert len({tuple(principles(s)) for s in range(4)}) > 1  # the seed decides them


def test_cai_stops_when_the_next_turn_would_not_fit():
    # 12 tokens of context: the question and a 3-word answer fit, a ~30-word critique request does not
    engine = ScriptedEngine(lambda req: ["x y z"], max_len=12)
    answer, calls, _ = run_answer(ConstitutionalAI(rounds=2), engine, max_tokens=4)
    assert [c["stage"] for c in calls] == ["sample"]
    assert answer["truncated"] and answer["extra"]["rounds"] == 0 and answer["extra"]["principles"] == []
    assert answer["text"] == "x y z"


# -- self-consistency --------------------------------------------------------------------------------
def test_sc_majority_vote_picks_the_first_sample_with_the_winner_and_scores_nothing():
    texts = ["It is 7.", "It is 3.", "so 3", "I think 7", "3!"]
    engine = ScriptedEngine(lambda req: texts)
    answer, calls, requests = run_answer(SelfConsistency(n=5), engine, prompt=ARITH)  # no reward model given
    assert [r.n for r in requests] == [5] and stages(calls) == [("sample", 5, None)]
    ex = answer["extra"]
    assert ex["votes"] == [7, 3, 3, 7, 3] and ex["vote_winner"] == 3 and ex["vote_share"] == pytest.approx(3 / 5)
    assert ex["selected_index"] == 1 and answer["text"] == "It is 3."
    assert answer["output_tokens"] == sum(len(t.split()) for t in texts)
    assert SelfConsistency(n=5).check(answer, calls) == []
    assert SelfConsistency(n=4).check(answer, calls)  # wrong n
    assert SelfConsistency(n=5).check(answer, calls + [dict(calls[0], stage="score")])  # no scoring allowed


def test_sc_ties_go_to_the_first_seen_and_no_vote_keeps_sample_zero():
    answer, _, _ = run_answer(SelfConsistency(n=5), ScriptedEngine(lambda req: ["no idea", "7", "3", "7", "3"]), prompt=ARITH)
    assert answer["extra"]["vote_winner"] == 7 and answer["extra"]["selected_index"] == 1 and answer["text"] == "7"
    assert majority([5, 3, 5, 3]) == (5, 2) and majority([None, 3, 5, 3, 5]) == (3, 2)
    answer, _, _ = run_answer(SelfConsistency(n=3), ScriptedEngine(lambda req: ["no idea", "hmm", "?"]), prompt=ARITH)
    ex = answer["extra"]
    assert ex["vote_winner"] is None and ex["votes"] == [None, None, None] and ex["vote_share"] == 0
    assert ex["selected_index"] == 0 and answer["text"] == "no idea"


def test_sc_votes_on_normalised_text_for_a_text_reference():
    capital = Prompt("c1", "Capital of France?", "mine", answer="Paris")
    answer, _, _ = run_answer(SelfConsistency(n=4), ScriptedEngine(lambda req: ["London", "Paris.", "the paris", "PARIS!"]), prompt=capital)
    assert answer["extra"]["votes"] == ["london", "paris", "paris", "paris"]
    assert answer["extra"]["vote_winner"] == "paris" and answer["text"] == "Paris."


# -- registry and parameters --------------------------------------------------------------------------
def test_registry_names_and_unknown_name_lists_the_valid_ones():
    assert list(REGISTRY) == ["plain", "bon", "bon_es", "cai", "sc"]
    for name, cls in REGISTRY.items():
        assert get_technique(name) is cls and cls.name == name
    with pytest.raises(KeyError) as exc:
        get_technique("dpo")
    assert exc.value.args[0] == "unknown technique 'dpo'; valid: plain, bon, bon_es, cai, sc"
    with pytest.raises(ConfigError, match="valid: plain, bon, bon_es, cai, sc"):
        parse_technique_spec("best_of_n:n=4")


BAD_PARAMS = [
    ("plain:n=2", "unknown key 'n' for plain; valid keys: (none)"),
    ("bon:n=0", "bon:n must be >= 1"),
    ("bon:n=2000", "bon:n must be <= 1024"),
    ("bon:n=four", "bon:n expected an integer"),
    ("bon:n=2.5", "bon:n expected an integer"),
    ("bon:share_prefix=maybe", "bon:share_prefix expected true or false"),
    ("bon:m=2", "unknown key 'm' for bon; valid keys: n, share_prefix"),
    ("bon_es:keep=0", "bon_es:keep must be >= 0.0001"),
    ("bon_es:keep=1.5", "bon_es:keep must be <= 1"),
    ("bon_es:keep=half", "bon_es:keep expected a number"),
    ("bon_es:checkpoint=0", "bon_es:checkpoint must be >= 1"),
    ("cai:rounds=-1", "cai:rounds must be >= 0"),
    ("cai:rounds=17", "cai:rounds must be <= 16"),
    ("cai:early_stop=2", "cai:early_stop expected true or false"),
    ("sc:n=0", "sc:n must be >= 1"),
    ("sc:temperature=0", "unknown key 'temperature' for sc; valid keys: n"),
]


@pytest.mark.parametrize("spec, fragment", BAD_PARAMS, ids=[s for s, _ in BAD_PARAMS])
def test_bad_parameters_are_refused_with_the_fix(spec, fragment):
    with pytest.raises(ConfigError) as exc:
        parse_technique_spec(spec)
    assert exc.value.field == "--technique" and fragment in str(exc.value), str(exc.value)


def test_every_technique_has_a_name_defaults_inside_bounds_and_its_declared_summary_columns():
    assert {spec.split(":")[0] for spec, _ in BAD_PARAMS} == set(REGISTRY)  # every technique has a bad-parameter case
    for name, cls in REGISTRY.items():
        defaults = {p.name: p.default for p in cls.params}
        for p in cls.params:
            assert p.help, (name, p.name)
            assert p.min is None or p.default >= p.min, (name, p.name)
            assert p.max is None or p.default <= p.max, (name, p.name)
        tech = cls(**defaults)
        [spec] = parse_technique_spec(name)  # the defaults make a valid cell
        assert spec.name == name
        # summary() writes exactly the columns the technique declares (what report/columns documents)
        assert set(tech.summary([], {})) == {c for c, _, _ in cls.summary_columns}, name


# -- whole profiles on the fake engine ------------------------------------------------------------
def profile_fake(tmp_path, techniques, engine, *, prompts, limit, max_tokens, **kw):
    """profile() on a fake engine and reward: (result, answers, calls, summary rows by 'cell@load')."""
    cfg = RunConfig(techniques=tuple(techniques), prompts=prompts, limit=limit, max_tokens=max_tokens,
                    out=str(tmp_path / "run"), judge_calibration=False, **kw)
    scorer = FakeReward()
    res = profile(cfg, engine=engine, scorer=scorer, eval_scorer=scorer)
    with open(res.run_dir / "summary.csv") as fh:
        summary = {r["cell"] + "@" + r["load"]: r for r in csv.DictReader(fh)}
    return res, list(read_jsonl(res.run_dir / "answers.jsonl")), list(read_jsonl(res.run_dir / "calls.jsonl")), summary


def test_cai_early_stop_and_truncation(tmp_path):
    class Sentinel(FakeEngine):
        def _results(self, requests, sampling, t0):
            out = super()._results(requests, sampling, t0)
            res = []
            from costtax.engines.base import GenResult

            for req, r in zip(requests, out):
                if "NO CHANGES NEEDED" in req.messages[-1]["content"] and "helpful-001" in req.request_id:
                    r = GenResult(**{**r.__dict__, "samples": (Sample("NO CHANGES NEEDED.", (1, 2, 3), "stop"),)})
                res.append(r)
            return res

    _, answers, _, summary = profile_fake(tmp_path, ["cai:rounds=3,early_stop=true"], Sentinel(), prompts=("helpful",),
                                          limit=2, max_tokens=16)
    a = {x["prompt_id"]: x for x in answers if x["technique"] == "cai"}
    stopped = a["helpful-001"]
    assert stopped["extra"]["stopped_early"] and stopped["extra"]["rounds"] == 1
    assert stopped["calls"] == 2  # answer + critique, no revision
    other = a["helpful-002"]
    assert not other["extra"]["stopped_early"] and other["calls"] == 1 + 2 * 3
    row = summary["cai:rounds=3,early_stop=true@batch"]
    assert float(row["cai_stopped_early_rate"]) == pytest.approx(0.5)


def test_cai_context_overflow_marks_truncated(tmp_path):
    res, answers, _, _ = profile_fake(tmp_path, ["cai:rounds=4"], FakeEngine(max_len=120, words_per_sample=30),
                                      prompts=("helpful",), limit=2, max_tokens=30)
    cai = [a for a in answers if a["technique"] == "cai"]
    assert cai and all(a["truncated"] for a in cai)
    assert all(a["extra"]["rounds"] < 4 for a in cai)
    assert json.loads((res.run_dir / "run.json").read_text())["status"] == "finished"


def test_self_consistency_votes_and_is_refused_without_answers(tmp_path):
    assert extract_vote("so the answer is 1,234.", "1234") == 1234
    assert extract_vote("Paris!", "paris") == "paris"
    assert majority([3, None, 5, 5, 3]) == (3, 2)  # tie: the value seen first
    assert majority([None, None]) == (None, 0)

    class Numbers(TimedEngine):
        def _results(self, requests, sampling, t0):
            out = super()._results(requests, sampling, t0)
            return [dataclasses.replace(r, samples=tuple(Sample(f"I think it is {k % 2}", (1, 2, 3, 4), "stop") for k in range(len(r.samples))))
                    for r in out]

    res, answers, _, summary = profile_fake(tmp_path / "ok", ["sc:n=3"], Numbers(), prompts=("arith",), limit=4, max_tokens=8,
                                            warmup_answers=0)
    row = summary["sc:n=3@batch"]
    assert row["accounting_violations"] == "0" and float(row["sc_vote_share_mean"]) == pytest.approx(2 / 3)
    sc = [a for a in answers if a["cell"] == "sc:n=3"]
    assert all(a["extra"]["vote_winner"] == 0 and a["text"] == "I think it is 0" for a in sc)
    assert float(row["output_tokens_per_answer_x"]) > 1.5  # three samples per answer
    with pytest.raises(ConfigError, match="reference answer"):
        profile_fake(tmp_path / "bad", ["sc:n=3"], TimedEngine(), prompts=("helpful",), limit=2, max_tokens=8)


def test_bon_es_keep_all_matches_bon_tokens_and_accounting(tmp_path):
    _, _, calls, summary = profile_fake(tmp_path, ["bon:n=4", "bon_es:n=4,checkpoint=3,keep=1", "bon_es:n=4,checkpoint=3,keep=0.25"],
                                        TimedEngine(), prompts=("helpful",), ignore_eos=True, max_tokens=8, warmup_answers=0, limit=3)
    full, keep_all, keep_one = (summary[c + "@batch"] for c in ("bon:n=4", "bon_es:n=4,checkpoint=3,keep=1", "bon_es:n=4,checkpoint=3,keep=0.25"))
    assert float(full["output_tokens_per_answer"]) == 4 * 8
    assert float(keep_all["output_tokens_per_answer"]) == 4 * 8  # every candidate runs to the end
    assert float(keep_all["bon_es_kept_mean"]) == 4 and float(keep_all["bon_es_discarded_tokens_per_answer"]) == 0
    assert float(keep_one["output_tokens_per_answer"]) == 4 * 3 + 5  # 4 to the checkpoint, 1 finished
    assert float(keep_one["bon_es_discarded_tokens_per_answer"]) == 3 * 3
    for row in (keep_all, keep_one):
        assert row["accounting_violations"] == "0", row["accounting_example"]
    cont = [c for c in calls if c["stage"] == "continue"]
    assert cont and all(c["n"] == 1 and c["output_tokens"] == 5 for c in cont)
    # the continuation prompt holds the partial output: the fake prefix cache serves none of it,
    # but its prompt is longer than the original prompt
    first = {c["answer_id"]: c for c in calls if c["stage"] == "sample"}
    assert all(c["prompt_tokens"] > first[c["answer_id"]]["prompt_tokens"] for c in cont)
