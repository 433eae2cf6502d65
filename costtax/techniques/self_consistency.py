"""Self-consistency (Wang et al., 2023): N samples, extract each one's final answer, majority
vote. No reward model: the vote is the selector, so the technique only applies to prompts with
a checkable final answer (arith, or a user JSONL with `answer`); preflight refuses it elsewhere.

Measurement choices:
- The N samples are one request of n=N (prefix caching shares the prompt prefill), exactly as
  bon's sample stage, so bon:n=N and sc:n=N differ only in the selector (reward model vs vote).
- Extraction: the reference decides the kind. An integer reference (arith) votes on the last
  integer of each sample (prompts.exact_match.extract_last_integer); a text reference votes on the
  normalised sample (prompts.exact_match.normalise_answer). Samples with nothing extractable do not vote.
- Ties: of the answers with the top count, the one that appears first in sample order wins; the
  final text is the first sample carrying it. No extractable answer at all: sample 0.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from .base import Param, TechniqueBase


def extract_vote(text: str | None, reference: str | None) -> Any:
    """The value a sample votes for, or None."""
    from ..prompts.exact_match import extract_last_integer, integer_reference, normalise_answer

    if reference is not None and integer_reference(reference):
        return extract_last_integer(text)
    norm = normalise_answer(text)
    return norm or None


def majority(votes: list[Any]) -> tuple[Any, int]:
    """(winning value, its count); ties go to the value seen first; (None, 0) if no votes."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None, 0
    top = max(counts.values())
    for v in votes:
        if v is not None and counts[v] == top:
            return v, top
    return None, 0  # pragma: no cover


class SelfConsistency(TechniqueBase):
    name: ClassVar[str] = "sc"
    description: ClassVar[str] = "N samples per prompt, majority vote over extracted final answers (no reward model)"
    params: ClassVar[tuple[Param, ...]] = (
        Param("n", int, default=8, required=True, min=1, max=1024, help="samples per prompt"),
    )
    needs_reference_answers: ClassVar[bool] = True  # preflight refuses sources without answers
    summary_columns: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("sc_vote_share_mean", "fraction", "votes for the winning answer / N, mean over answers (agreement)"),
        ("sc_no_vote_rate", "fraction", "answers where no sample had an extractable final answer"),
    )

    def __init__(self, n: int = 8):
        self.n = n

    async def answer(self, inst, ctx) -> None:
        res = await ctx.generate(inst, ctx.request(inst, inst.prompt.messages(), n=self.n), stage="sample")
        texts = [s.text for s in res.samples]
        votes = [extract_vote(t, inst.prompt.answer) for t in texts]
        winner, count = majority(votes)
        k = next((i for i, v in enumerate(votes) if winner is not None and v == winner), 0)
        chosen = res.samples[k]
        ctx.finish_answer(
            inst,
            chosen.text,
            truncated=chosen.finish_reason == "length",
            selected_index=k,
            votes=[v if v is None or isinstance(v, (int, str)) else str(v) for v in votes],
            vote_winner=winner,
            vote_share=count / self.n,
            candidate_output_tokens=[s.output_tokens for s in res.samples],
            candidate_texts=texts,
        )

    def summary(self, answers, prompts_answer) -> dict:
        from ..stats import mean_or_none

        ex = [a.get("extra") or {} for a in answers]
        return {
            "sc_vote_share_mean": mean_or_none(e.get("vote_share") for e in ex),
            "sc_no_vote_rate": (sum(1 for e in ex if e.get("vote_winner") is None) / len(ex)) if ex else None,
        }

    def check(self, answer, calls) -> list[str]:
        tech = [c for c in calls if c["stage"] != "eval"]
        if len(tech) != 1 or tech[0]["stage"] != "sample" or tech[0]["n"] != self.n:
            return [f"sc answer {answer['answer_id']}: expected one sample call of n={self.n}, no scoring"]
        return []
