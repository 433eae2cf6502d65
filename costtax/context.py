"""CellContext: what a technique sees. Every model call goes through it and becomes a CallRecord;
per-answer totals are accumulated here, so no technique does its own accounting."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .records import AnswerRecord, CallRecord

if TYPE_CHECKING:  # pragma: no cover
    from .engines.base import Engine, GenRequest, GenResult, SamplingSpec
    from .prompts import Prompt
    from .records import RunWriter


@dataclass(frozen=True)
class PromptInstance:
    """One final answer to produce: a prompt and a repeat index."""

    prompt: "Prompt"
    repeat: int
    answer_id: str


@dataclass
class _AnswerTotals:
    calls: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int | None = 0
    output_tokens: int = 0
    reward_tokens: int = 0
    score_latency_s: float = 0.0
    t_first_submit: float | None = None
    t_last_finish: float | None = None
    ttft_s: float | None = None

    def add(self, rec: CallRecord) -> None:
        self.calls += 1
        if rec.stage == "score":
            self.reward_tokens += rec.prompt_tokens
            self.score_latency_s += rec.latency_s
        else:
            self.prompt_tokens += rec.prompt_tokens * rec.n
            self.output_tokens += rec.output_tokens
            if self.cached_prompt_tokens is not None:
                self.cached_prompt_tokens = (
                    None if rec.cached_prompt_tokens is None else self.cached_prompt_tokens + rec.cached_prompt_tokens
                )
            if self.ttft_s is None and rec.ttft_s is not None and rec.stage == "sample":
                self.ttft_s = rec.ttft_s
        self.t_first_submit = rec.t_submit_s if self.t_first_submit is None else min(self.t_first_submit, rec.t_submit_s)
        self.t_last_finish = rec.t_finish_s if self.t_last_finish is None else max(self.t_last_finish, rec.t_finish_s)


class CellContext:
    def __init__(
        self,
        *,
        run_id: str,
        cell: str,
        technique: str,
        engine: "Engine",
        sampling: "SamplingSpec",
        writer: "RunWriter",
        epoch: float,
        repeats: int = 1,
        scorer=None,
        eval_scorer=None,
        skip_answers: frozenset[str] = frozenset(),
        options: dict[str, Any] | None = None,
        session: str | None = None,
    ):
        self.run_id, self.cell, self.technique = run_id, cell, technique
        self.engine, self.sampling, self.writer = engine, sampling, writer
        self.epoch = epoch
        self.repeats = repeats
        self._scorer, self._eval_scorer = scorer, eval_scorer
        self.skip_answers = skip_answers
        self.options = dict(options or {})
        self.session = session
        self._finished: list[tuple[PromptInstance, str]] = []
        self.engine_stats: dict[str, Any] = {}
        self._totals: dict[str, _AnswerTotals] = {}
        self._ids = itertools.count()
        self._batches = itertools.count()
        self.answers_written = 0

    # -- ids ---------------------------------------------------------------------------------------
    def expand(self, prompts: Sequence["Prompt"]) -> list[PromptInstance]:
        """Prompt x repeat instances still to answer (finished ones are skipped on resume)."""
        out = []
        for r in range(self.repeats):
            for p in prompts:
                aid = f"{self.cell}|{p.id}|{r}"
                if aid not in self.skip_answers:
                    out.append(PromptInstance(p, r, aid))
        return out

    def request(self, inst: PromptInstance, messages, *, n: int = 1, share_prefix: bool = True, max_tokens=None) -> "GenRequest":
        from .engines.base import GenRequest

        return GenRequest(
            request_id=f"{inst.answer_id}#{next(self._ids)}",
            messages=tuple(messages),
            n=n,
            share_prefix=share_prefix,
            max_tokens=max_tokens,
        )

    @property
    def scorer(self):
        if self._scorer is None:
            raise RuntimeError(f"{self.technique} needs a reward model but none is configured")
        return self._scorer

    @property
    def has_eval_scorer(self) -> bool:
        return self._eval_scorer is not None

    # -- calls ---------------------------------------------------------------------------------------
    def generate(
        self, items: Sequence[tuple[PromptInstance, "GenRequest"]], *, stage: str, round: int | None = None
    ) -> list["GenResult"]:
        """One batched engine call; one CallRecord per request, all sharing a batch_id."""
        if not items:
            return []
        batch_id = f"b{next(self._batches)}"
        results = self.engine.generate([req for _, req in items], self.sampling)
        self._add_engine_stats(self.engine.last_batch_stats())
        for (inst, req), res in zip(items, results):
            t_first = None if res.t_first_token_s is None else res.t_first_token_s - self.epoch
            t_submit = res.t_submit_s - self.epoch
            self._record(
                self._call(
                    inst,
                    stage,
                    batch_id,
                    n=req.n,
                    prompt_tokens=res.prompt_tokens,
                    cached_prompt_tokens=res.cached_prompt_tokens,
                    output_tokens=res.output_tokens,
                    t_submit_s=t_submit,
                    t_first_token_s=t_first,
                    t_finish_s=res.t_finish_s - self.epoch,
                    ttft_s=None if t_first is None else t_first - t_submit,
                    prompt_tokens_computed=res.prompt_tokens_computed,
                    ttft_source=res.ttft_source,
                    round=round,
                    finish_reasons=tuple(s.finish_reason for s in res.samples),
                    extra={"share_prefix": req.share_prefix},
                )
            )
        return results

    def score(
        self, items: Sequence[tuple[PromptInstance, Sequence[str]]], *, stage: str = "score"
    ) -> list[list[float]]:
        """Reward of every response; the candidates of one prompt are scored together.

        stage="score" is selection scoring (part of the technique's cost); stage="eval" scores
        final answers afterwards and is excluded from the technique's calls and cost.
        """
        scorer = self.scorer if stage == "score" else self._eval_scorer
        if scorer is None:
            raise RuntimeError("no evaluation reward model configured")
        batch_id = f"b{next(self._batches)}"
        out = []
        for inst, responses in items:
            t0 = time.monotonic()
            res = scorer.score([inst.prompt.text] * len(responses), list(responses))
            t1 = time.monotonic()
            rec = self._call(
                inst,
                stage,
                batch_id,
                n=len(responses),
                prompt_tokens=int(sum(res.tokens)),
                # tokens the reward model read from its own prefix cache (the judge's few-shot block)
                cached_prompt_tokens=int(sum(res.cached_tokens)) if getattr(res, "cached_tokens", ()) else None,
                output_tokens=0,
                t_submit_s=t0 - self.epoch,
                t_first_token_s=None,
                t_finish_s=t1 - self.epoch,
                ttft_s=None,
                extra={
                    "rewards": [float(r) for r in res.rewards],
                    "reward_model": scorer.name,
                    "kernel_path": res.path,
                    "padding_fraction": res.padding_fraction,
                },
            )
            if stage == "score":
                self._record(rec)
            else:
                self.writer.call(rec)
            out.append([float(r) for r in res.rewards])
        return out

    def _call(self, inst: PromptInstance, stage: str, batch_id: str, **fields) -> CallRecord:
        """A CallRecord for one answer's call; latency_s = t_finish_s - t_submit_s."""
        return CallRecord(
            run_id=self.run_id,
            cell=self.cell,
            call_id=f"{self.cell}|c{next(self._ids)}",
            answer_id=inst.answer_id,
            prompt_id=inst.prompt.id,
            stage=stage,
            latency_s=fields["t_finish_s"] - fields["t_submit_s"],
            batch_id=batch_id,
            answer_ids=(inst.answer_id,),
            repeat=inst.repeat,
            session=self.session,
            **fields,
        )

    def _add_engine_stats(self, stats) -> None:
        """Engine counters over the cell: prefix-cache queries/hits summed, gauges' peaks."""
        agg = self.engine_stats
        for key in ("prefix_cache_queries", "prefix_cache_hits"):
            v = getattr(stats, key, None)
            if v is not None:
                agg[key] = agg.get(key, 0) + v
        for key, v in (getattr(stats, "extra", None) or {}).items():
            if isinstance(v, (int, float)):
                agg[key] = max(agg.get(key, v), v)

    def _record(self, rec: CallRecord) -> None:
        self.writer.call(rec)
        self._totals.setdefault(rec.answer_id, _AnswerTotals()).add(rec)

    # -- answers -------------------------------------------------------------------------------------
    def finish_answer(
        self,
        inst: PromptInstance,
        text: str,
        *,
        selection_reward: float | None = None,
        truncated: bool = False,
        **extra: Any,
    ) -> None:
        t = self._totals.get(inst.answer_id, _AnswerTotals())
        latency = (t.t_last_finish - t.t_first_submit) if t.t_first_submit is not None else 0.0
        self.writer.answer(
            AnswerRecord(
                run_id=self.run_id,
                cell=self.cell,
                answer_id=inst.answer_id,
                technique=self.technique,
                prompt_id=inst.prompt.id,
                text=text,
                calls=t.calls,
                prompt_tokens=t.prompt_tokens,
                output_tokens=t.output_tokens,
                latency_s=latency,
                cached_prompt_tokens=t.cached_prompt_tokens,
                prompt_set=inst.prompt.prompt_set,
                repeat=inst.repeat,
                reward_tokens=t.reward_tokens,
                score_latency_s=t.score_latency_s,
                selection_reward=selection_reward,
                truncated=truncated,
                ttft_s=t.ttft_s,
                extra=extra,
                session=self.session,
            )
        )
        self.answers_written += 1
        self._finished.append((inst, text))

    def run_eval(self) -> int:
        """Score this cell's final answers with the evaluation reward model (stage=eval).

        Called by the profiler after the cell's metered window: evaluation is not part of the
        technique's cost. Returns the number of answers scored."""
        if self._eval_scorer is None or not self._finished:
            return 0
        self.score([(inst, [text]) for inst, text in self._finished], stage="eval")
        n = len(self._finished)
        self._finished = []
        return n
