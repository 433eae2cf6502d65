"""Best-of-N: draw N samples per prompt, score them with the reward model, keep the argmax.

Measurement choices:
- share_prefix=true (default): the N samples are N engine requests over the same prompt with
  prefix caching on, so the prompt is prefilled once and N-1 samples read it from the cache
  (visible as cached_prompt_tokens). share_prefix=false gives each sample a distinct cache salt:
  N prefills, the layout of implementations that batch N copies of the prompt.
- The N candidates of one prompt are scored together in one reward call (stage=score); the
  selection (max, argmax, z-scores) goes through costtax.kernels.group_select.
"""
from __future__ import annotations

import math
from typing import ClassVar

from ..stats import positive_int
from .base import Param, TechniqueBase


def bon_kl_bound_nats(n: int) -> float:
    """Upper bound on KL(best-of-n || reference policy), in nats: ``log(n) - (n-1)/n``.

    This is the widely used analytical formula, shown by Beirami et al. (2024),
    "Theoretical guarantees on the best-of-n alignment policy", to be an upper
    bound on the true KL divergence. ``n`` must be an integer >= 1 (n=1 gives 0).
    """
    n = positive_int(n)
    return math.log(n) - (n - 1) / n


def bon_win_rate_bound(n: int) -> float:
    """Win rate of best-of-n against a single reference sample: ``n / (n + 1)``.

    Beirami et al. (2024), "Theoretical guarantees on the best-of-n alignment
    policy": attained when the reward has no ties (continuous reward), an upper
    bound otherwise. ``n`` must be an integer >= 1 (n=1 gives 0.5).
    """
    n = positive_int(n)
    return n / (n + 1)


def select_groups(rewards: list[list[float]]) -> list[dict]:
    """Per group: max, argmax (first max on ties), z-scores, via the group_select kernel."""
    import torch

    from ..kernels.group_select import group_select

    flat = [r for group in rewards for r in group]
    offsets = [0]
    for group in rewards:
        offsets.append(offsets[-1] + len(group))
    sel = group_select(torch.tensor(flat, dtype=torch.float32), torch.tensor(offsets, dtype=torch.int64))
    out = []
    for g, group in enumerate(rewards):
        lo, hi = offsets[g], offsets[g + 1]
        out.append(
            {
                "max": float(sel.max[g]),
                "argmax": int(sel.argmax[g]),
                "zscore": [float(z) for z in sel.zscore[lo:hi]],
            }
        )
    return out


class BestOfN(TechniqueBase):
    name: ClassVar[str] = "bon"
    description: ClassVar[str] = "N samples per prompt, reward-model argmax"
    params: ClassVar[tuple[Param, ...]] = (
        Param("n", int, default=4, required=True, min=1, max=1024, help="samples per prompt"),
        Param("share_prefix", bool, default=True, help="let the N samples share the prompt prefill"),
    )
    needs_reward_model: ClassVar[bool] = True
    summary_columns: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("bon_kl_bound_nats", "nats", "upper bound on KL(best-of-N || base) = log N - (N-1)/N (Beirami et al. 2024)"),
        ("bon_win_rate_bound", "fraction", "upper bound on best-of-N's win-rate vs the base policy, N/(N+1)"),
    )

    def __init__(self, n: int = 4, share_prefix: bool = True):
        self.n = n
        self.share_prefix = share_prefix

    async def answer(self, inst, ctx) -> None:
        # One request of N samples (prefix caching shares the prompt prefill when share_prefix),
        # then one score call for the N candidates, as soon as this answer's samples are back.
        res = await ctx.generate(inst, ctx.request(inst, inst.prompt.messages(), n=self.n, share_prefix=self.share_prefix), stage="sample")
        candidates = [s.text for s in res.samples]
        group = await ctx.score(inst, candidates, stage="score")
        sel = select_groups([group])[0]
        k = sel["argmax"]
        chosen = res.samples[k]
        ctx.finish_answer(
            inst,
            chosen.text,
            selection_reward=sel["max"],
            truncated=chosen.finish_reason == "length",
            selected_index=k,
            candidate_rewards=group,
            candidate_zscores=sel["zscore"],
            candidate_output_tokens=[s.output_tokens for s in res.samples],
            candidate_texts=candidates,
        )

    def summary(self, answers, prompts_answer) -> dict:
        return {"bon_kl_bound_nats": bon_kl_bound_nats(self.n), "bon_win_rate_bound": bon_win_rate_bound(self.n)}

    def check(self, answer, calls) -> list[str]:
        tech = [c for c in calls if c["stage"] != "eval"]
        samples = [c for c in tech if c["stage"] == "sample"]
        scores = [c for c in tech if c["stage"] == "score"]
        out = []
        if len(samples) != 1 or samples[0]["n"] != self.n:
            out.append(f"bon answer {answer['answer_id']}: expected one sample call of n={self.n}")
        if len(scores) != 1 or scores[0]["n"] != self.n:
            out.append(f"bon answer {answer['answer_id']}: expected one score call over {self.n} candidates")
        return out
