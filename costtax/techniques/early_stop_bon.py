"""Early-stopping best-of-N (`bon_es`), after Speculative Rejection (Sun et al., 2024): start N
samples, stop them after `checkpoint` tokens, score the partial outputs with the reward model,
keep the top `keep` fraction, continue only those to the end, select the argmax of the final
scores. The compute saved is the discarded candidates' tokens after the checkpoint, paid for
with a second score call.

Measurement choices:
- Phase 1 is one request of N samples capped at `checkpoint` tokens (prefix caching shares the
  prompt prefill, as in bon). Samples that already finished (EOS) before the checkpoint are kept
  or dropped like the others but need no continuation.
- Continuation is token-level through the engine (GenRequest.continue_final: the partial output
  becomes the last assistant turn and the engine continues it, `continue_final_message`), one
  request per kept candidate, stage `continue`; the prefix cache serves prompt + partial output,
  so cached_prompt_tokens shows what resuming reused. The partial text is re-tokenised on
  resume: a token boundary can shift by one token at the seam.
- Both score calls (partial, then final) are selection scoring (stage `score`). keep=1 keeps all
  N: the same generated tokens as bon:n=N (exactly so with --ignore-eos) plus one more score call.
"""
from __future__ import annotations

import asyncio
import math
from typing import ClassVar

from .base import Param, TechniqueBase


def top_k_indices(rewards: list[float], k: int) -> list[int]:
    """Indices of the k highest rewards, ties broken by the lower index; returned in index order."""
    order = sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))
    return sorted(order[:k])


class EarlyStopBestOfN(TechniqueBase):
    name: ClassVar[str] = "bon_es"
    description: ClassVar[str] = "N samples to a checkpoint, keep the top fraction by partial reward, finish those, argmax"
    params: ClassVar[tuple[Param, ...]] = (
        Param("n", int, default=16, required=True, min=1, max=1024, help="samples started per prompt"),
        Param("checkpoint", int, default=32, required=True, min=1, max=32768, help="tokens before the partial outputs are scored"),
        Param("keep", float, default=0.25, required=True, min=0.0001, max=1.0, help="fraction of candidates continued past the checkpoint"),
    )
    needs_reward_model: ClassVar[bool] = True
    summary_columns: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("bon_es_kept_mean", "count", "candidates continued past the checkpoint per answer (ceil(keep x N))"),
        ("bon_es_discarded_tokens_per_answer", "tokens", "tokens generated for candidates dropped at the checkpoint, per answer"),
        ("bon_es_continued_tokens_per_answer", "tokens", "tokens generated after the checkpoint, per answer"),
        ("bon_es_rank_kept_rate", "fraction", "answers whose final pick was also the top partial score (how predictive the checkpoint was)"),
    )

    def __init__(self, n: int = 16, checkpoint: int = 32, keep: float = 0.25):
        self.n, self.checkpoint, self.keep = n, checkpoint, keep

    @property
    def kept(self) -> int:
        return max(1, math.ceil(self.keep * self.n - 1e-9))

    async def answer(self, inst, ctx) -> None:
        msgs = list(inst.prompt.messages())
        budget = ctx.sampling.max_tokens
        first_cap = min(self.checkpoint, budget)
        res = await ctx.generate(inst, ctx.request(inst, msgs, n=self.n, max_tokens=first_cap), stage="sample")
        partial = [s.text for s in res.samples]
        partial_rewards = await ctx.score(inst, partial, stage="score")
        keep = top_k_indices(partial_rewards, self.kept)

        async def finish(i: int):
            s = res.samples[i]
            room = budget - s.output_tokens
            if s.finish_reason == "stop" or room < 1:
                return s.text, 0, s.finish_reason
            req = ctx.request(inst, msgs + [{"role": "assistant", "content": s.text}], max_tokens=room, continue_final=True)
            out = await ctx.generate(inst, req, stage="continue", round=2)
            c = out.samples[0]
            return s.text + c.text, c.output_tokens, c.finish_reason

        done = await asyncio.gather(*(finish(i) for i in keep))
        finals = [t for t, _, _ in done]
        final_rewards = await ctx.score(inst, finals, stage="score")
        j = max(range(len(finals)), key=lambda x: (final_rewards[x], -x))
        chosen = keep[j]
        discarded = sum(res.samples[i].output_tokens for i in range(self.n) if i not in keep)
        ctx.finish_answer(
            inst,
            finals[j],
            selection_reward=final_rewards[j],
            truncated=done[j][2] == "length",
            selected_index=chosen,
            kept_indices=keep,
            partial_rewards=partial_rewards,
            candidate_rewards=final_rewards,
            candidate_texts=finals,
            discarded_tokens=discarded,
            continued_tokens=sum(t for _, t, _ in done),
            top_partial_index=max(range(self.n), key=lambda x: (partial_rewards[x], -x)),
        )

    def summary(self, answers, prompts_answer) -> dict:
        from ..stats import mean_or_none

        ex = [a.get("extra") or {} for a in answers]
        ranked = [e.get("selected_index") == e.get("top_partial_index") for e in ex if e.get("selected_index") is not None]
        return {
            "bon_es_kept_mean": mean_or_none(len(e.get("kept_indices") or []) for e in ex),
            "bon_es_discarded_tokens_per_answer": mean_or_none(e.get("discarded_tokens") for e in ex),
            "bon_es_continued_tokens_per_answer": mean_or_none(e.get("continued_tokens") for e in ex),
            "bon_es_rank_kept_rate": (sum(ranked) / len(ranked)) if ranked else None,
        }

    def check(self, answer, calls) -> list[str]:
        ex = answer.get("extra") or {}
        tech = [c for c in calls if c["stage"] != "eval"]
        samples = [c for c in tech if c["stage"] == "sample"]
        scores = [c for c in tech if c["stage"] == "score"]
        cont = [c for c in tech if c["stage"] == "continue"]
        out = []
        if len(samples) != 1 or samples[0]["n"] != self.n:
            out.append(f"bon_es answer {answer['answer_id']}: expected one sample call of n={self.n}")
        if len(scores) != 2 or scores[0]["n"] != self.n or scores[1]["n"] != self.kept:
            out.append(f"bon_es answer {answer['answer_id']}: expected score calls over {self.n} partial then {self.kept} final candidates")
        if len(cont) > self.kept or sum(c["output_tokens"] for c in cont) != ex.get("continued_tokens", 0):
            out.append(f"bon_es answer {answer['answer_id']}: continuation calls disagree with continued_tokens")
        return out
