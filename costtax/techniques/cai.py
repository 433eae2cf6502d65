"""Constitutional AI at inference time: answer, then `rounds` x (critique under a principle,
revise). The conversation grows every round (the prompt of round r holds all earlier turns);
that growth is the cost this technique's profile shows.

- Principle per round: drawn with random.Random seeded by (run seed, prompt id, repeat, round),
  so a rerun picks the same principles; the choice is recorded per answer.
- early_stop=true: a round whose critique contains "NO CHANGES NEEDED" (case-insensitive) ends
  the loop for that answer without a revision call; recorded as stopped_early.
- Context overflow: when the next request's prompt would not leave room for one output token
  within the engine's max_model_len, the loop stops, the last answer is kept and the answer is
  recorded truncated=true (small models ramble to max_tokens; conversations can outgrow 2,048).
"""
from __future__ import annotations

import random
from typing import ClassVar

from .base import Param, TechniqueBase


class ConstitutionalAI(TechniqueBase):
    name: ClassVar[str] = "cai"
    description: ClassVar[str] = "answer, then critique/revise rounds under constitution principles"
    params: ClassVar[tuple[Param, ...]] = (
        Param("rounds", int, default=1, required=True, min=0, max=16, help="critique/revise rounds"),
        Param("early_stop", bool, default=False, help="stop when the critique says NO CHANGES NEEDED"),
    )
    uses_constitution: ClassVar[bool] = True  # preflight loads and validates --constitution
    summary_columns: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("cai_rounds_mean", "rounds", "critique/revise rounds completed per answer, mean"),
        ("cai_stopped_early_rate", "fraction", "answers whose critique said NO CHANGES NEEDED (early_stop=true)"),
        ("cai_correct_to_wrong", "fraction", "answers with a reference: initial answer correct, revised answer wrong"),
        ("cai_wrong_to_correct", "fraction", "answers with a reference: initial answer wrong, revised answer correct"),
    )

    def __init__(self, rounds: int = 1, early_stop: bool = False):
        self.rounds = rounds
        self.early_stop = early_stop

    async def answer(self, inst, ctx) -> None:
        from .constitution import NO_CHANGES, default_constitution

        # parsed once per run by preflight (the runner passes the Constitution); never re-read here,
        # inside the timed window. A context without one (a technique used on its own) gets the default.
        constitution = ctx.options.get("constitution") or default_constitution()
        seed = ctx.options.get("seed", 0)
        conv = list(inst.prompt.messages())
        principles, critiques, changed = [], [], []
        rounds_done, stopped_early, truncated = 0, False, False

        res = await ctx.generate(inst, ctx.request(inst, conv), stage="sample")
        answer = initial = res.samples[0].text
        conv.append({"role": "assistant", "content": answer})
        for rnd in range(1, self.rounds + 1):
            rng = random.Random(f"{seed}|{inst.prompt.id}|{inst.answer_repeat}|{rnd}")
            principle = rng.choice(constitution.principles)
            msgs = conv + [{"role": "user", "content": principle.critique}]
            if not await ctx.fits(msgs):
                truncated = True
                break
            principles.append(principle.id)
            res = await ctx.generate(inst, ctx.request(inst, msgs), stage="critique", round=rnd)
            critique = res.samples[0].text
            critiques.append(critique)
            conv = msgs + [{"role": "assistant", "content": critique}]
            if self.early_stop and NO_CHANGES.lower() in critique.lower():
                stopped_early, rounds_done = True, rnd
                break
            msgs = conv + [{"role": "user", "content": principle.revision}]
            if not await ctx.fits(msgs):
                truncated = True
                break
            res = await ctx.generate(inst, ctx.request(inst, msgs), stage="revise", round=rnd)
            revised = res.samples[0].text
            changed.append(revised.strip() != (answer or "").strip())
            answer = revised
            conv = msgs + [{"role": "assistant", "content": revised}]
            rounds_done = rnd

        ctx.finish_answer(
            inst,
            answer or "",
            truncated=truncated,
            rounds=rounds_done,
            principles=principles,
            stopped_early=stopped_early,
            revisions_changed=changed,
            critiques=critiques,
            initial_text=initial,
            conversation_turns=len(conv),
        )

    def summary(self, answers, prompts_answer) -> dict:
        from ..prompts.exact_match import is_correct
        from ..stats import mean_or_none

        ex = [a.get("extra") or {} for a in answers]
        stopped = [bool(e["stopped_early"]) for e in ex if e.get("stopped_early") is not None]
        pairs = [
            (is_correct(e.get("initial_text"), prompts_answer[a["prompt_id"]]), is_correct(a["text"], prompts_answer[a["prompt_id"]]))
            for a, e in zip(answers, ex)
            if e.get("initial_text") is not None and prompts_answer.get(a["prompt_id"]) is not None
        ]
        return {
            "cai_rounds_mean": mean_or_none(e.get("rounds") for e in ex),
            "cai_stopped_early_rate": (sum(stopped) / len(stopped)) if stopped else None,
            "cai_correct_to_wrong": (sum(1 for b, f in pairs if b and not f) / len(pairs)) if pairs else None,
            "cai_wrong_to_correct": (sum(1 for b, f in pairs if not b and f) / len(pairs)) if pairs else None,
        }

    def check(self, answer, calls) -> list[str]:
        ex = answer.get("extra") or {}
        tech = [c for c in calls if c["stage"] != "eval"]
        crit = sum(1 for c in tech if c["stage"] == "critique")
        rev = sum(1 for c in tech if c["stage"] == "revise")
        out = []
        if sum(1 for c in tech if c["stage"] == "sample") != 1:
            out.append(f"cai answer {answer['answer_id']}: expected one initial sample call")
        expected_rev = int(ex.get("rounds", rev)) - (1 if ex.get("stopped_early") else 0)
        if rev != expected_rev or crit < rev or crit > rev + 1:
            out.append(f"cai answer {answer['answer_id']}: {crit} critiques / {rev} revisions for {ex.get('rounds')} rounds")
        return out
