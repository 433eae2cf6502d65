"""Plain decoding: one sample per prompt. The baseline every multiplier is computed against."""
from __future__ import annotations

from typing import ClassVar

from .base import Param, TechniqueBase


class Plain(TechniqueBase):
    name: ClassVar[str] = "plain"
    description: ClassVar[str] = "one sampled answer per prompt (the baseline)"
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params):
        pass

    async def answer(self, inst, ctx) -> None:
        res = await ctx.generate(inst, ctx.request(inst, inst.prompt.messages()), stage="sample")
        sample = res.samples[0]
        ctx.finish_answer(inst, sample.text, truncated=sample.finish_reason == "length")

    def check(self, answer, calls) -> list[str]:
        tech = [c for c in calls if c["stage"] != "eval"]
        if len(tech) != 1 or tech[0]["stage"] != "sample" or tech[0]["n"] != 1:
            return [f"plain answer {answer['answer_id']} should be one sample call of n=1, got {len(tech)} calls"]
        return []
