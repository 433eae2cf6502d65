"""Plain decoding: one sample per prompt. The baseline every multiplier is computed against."""
from __future__ import annotations

from typing import ClassVar

from .base import Param


class Plain:
    name: ClassVar[str] = "plain"
    description: ClassVar[str] = "one sampled answer per prompt (the baseline)"
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params):
        pass

    def run(self, prompts, ctx) -> None:
        insts = ctx.expand(prompts)
        results = ctx.generate([(i, ctx.request(i, i.prompt.messages())) for i in insts], stage="sample")
        for inst, res in zip(insts, results):
            sample = res.samples[0]
            ctx.finish_answer(inst, sample.text, truncated=sample.finish_reason == "length")
