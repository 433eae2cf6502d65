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

from typing import ClassVar

from .base import Param


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


class BestOfN:
    name: ClassVar[str] = "bon"
    description: ClassVar[str] = "N samples per prompt, reward-model argmax"
    params: ClassVar[tuple[Param, ...]] = (
        Param("n", int, default=4, required=True, min=1, max=1024, help="samples per prompt"),
        Param("share_prefix", bool, default=True, help="let the N samples share the prompt prefill"),
    )

    def __init__(self, n: int = 4, share_prefix: bool = True):
        self.n = n
        self.share_prefix = share_prefix

    def run(self, prompts, ctx) -> None:
        insts = ctx.expand(prompts)
        if not insts:
            return
        reqs = [(i, ctx.request(i, i.prompt.messages(), n=self.n, share_prefix=self.share_prefix)) for i in insts]
        results = ctx.generate(reqs, stage="sample")
        candidates = [[s.text for s in r.samples] for r in results]
        rewards = ctx.score(list(zip(insts, candidates)), stage="score")
        for inst, res, group, sel in zip(insts, results, rewards, select_groups(rewards)):
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
                candidate_texts=[s.text for s in res.samples],
            )
