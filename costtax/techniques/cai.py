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

from .base import Param


class ConstitutionalAI:
    name: ClassVar[str] = "cai"
    description: ClassVar[str] = "answer, then critique/revise rounds under constitution principles"
    params: ClassVar[tuple[Param, ...]] = (
        Param("rounds", int, default=1, required=True, min=0, max=16, help="critique/revise rounds"),
        Param("early_stop", bool, default=False, help="stop when the critique says NO CHANGES NEEDED"),
    )

    def __init__(self, rounds: int = 1, early_stop: bool = False):
        self.rounds = rounds
        self.early_stop = early_stop

    def run(self, prompts, ctx) -> None:
        from ..constitution import NO_CHANGES, load_constitution

        constitution = load_constitution(ctx.options.get("constitution"))
        seed = ctx.options.get("seed", 0)
        insts = ctx.expand(prompts)
        if not insts:
            return
        state = {
            i.answer_id: {
                "conv": list(i.prompt.messages()),
                "answer": None,
                "principles": [],
                "critiques": [],
                "rounds": 0,
                "stopped_early": False,
                "truncated": False,
                "changed": [],
                "active": True,
            }
            for i in insts
        }
        limit = ctx.engine.max_model_len()

        def fits(messages) -> bool:
            return ctx.engine.count_tokens(ctx.engine.render(messages)) < limit

        results = ctx.generate([(i, ctx.request(i, i.prompt.messages())) for i in insts], stage="sample")
        for i, res in zip(insts, results):
            s = state[i.answer_id]
            s["answer"] = s["initial"] = res.samples[0].text
            s["conv"].append({"role": "assistant", "content": s["answer"]})

        for rnd in range(1, self.rounds + 1):
            crit_items = []
            for i in insts:
                s = state[i.answer_id]
                if not s["active"]:
                    continue
                rng = random.Random(f"{seed}|{i.prompt.id}|{i.repeat}|{rnd}")
                principle = rng.choice(constitution.principles)
                msgs = s["conv"] + [{"role": "user", "content": principle.critique}]
                if not fits(msgs):
                    s["active"], s["truncated"] = False, True
                    continue
                s["principles"].append(principle.id)
                s["_principle"] = principle
                crit_items.append((i, ctx.request(i, msgs)))
            for (i, req), res in zip(crit_items, ctx.generate(crit_items, stage="critique", round=rnd)):
                s = state[i.answer_id]
                critique = res.samples[0].text
                s["critiques"].append(critique)
                s["conv"] = list(req.messages) + [{"role": "assistant", "content": critique}]
                if self.early_stop and NO_CHANGES.lower() in critique.lower():
                    s["active"], s["stopped_early"] = False, True
                    s["rounds"] = rnd
            rev_items = []
            for i, _ in crit_items:
                s = state[i.answer_id]
                if not s["active"]:
                    continue
                msgs = s["conv"] + [{"role": "user", "content": s["_principle"].revision}]
                if not fits(msgs):
                    s["active"], s["truncated"] = False, True
                    continue
                rev_items.append((i, ctx.request(i, msgs)))
            for (i, req), res in zip(rev_items, ctx.generate(rev_items, stage="revise", round=rnd)):
                s = state[i.answer_id]
                revised = res.samples[0].text
                s["changed"].append(revised.strip() != (s["answer"] or "").strip())
                s["answer"] = revised
                s["conv"] = list(req.messages) + [{"role": "assistant", "content": revised}]
                s["rounds"] = rnd

        for i in insts:
            s = state[i.answer_id]
            ctx.finish_answer(
                i,
                s["answer"] or "",
                truncated=s["truncated"],
                rounds=s["rounds"],
                principles=s["principles"],
                stopped_early=s["stopped_early"],
                revisions_changed=s["changed"],
                critiques=s["critiques"],
                initial_text=s.get("initial"),
                conversation_turns=len(s["conv"]),
            )
