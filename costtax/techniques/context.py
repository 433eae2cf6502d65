"""CellContext: what a technique sees. Every model call goes through it and becomes a CallRecord;
per-answer totals are accumulated here, so no technique does its own accounting.

One context serves one unit: a cell at one load level, one cell repeat. Techniques are async
per-answer programs; many answers share the context concurrently on one event loop (asyncio
is single-threaded, so the bookkeeping below needs no locks)."""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..load.levels import BATCH, LoadLevel
from ..store.records import AnswerRecord, CallRecord, ScoreRecord

if TYPE_CHECKING:  # pragma: no cover
    from ..engines.base import Engine, GenRequest, GenResult, SamplingSpec
    from ..prompts import Prompt
    from ..store.records import RunWriter


@dataclass(frozen=True)
class PromptInstance:
    """One final answer to produce: a prompt and which of its --repeats answers this is."""

    prompt: "Prompt"
    answer_repeat: int  # 0..repeats-1; written as the records' `repeat` field
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
    prompt_unknown: bool = False  # a server that reports no usage: prompt tokens unknown, never 0

    def add(self, rec: CallRecord) -> None:
        self.calls += 1
        if rec.stage == "score":
            self.reward_tokens += rec.prompt_tokens or 0
            self.score_latency_s += rec.latency_s
        else:
            if rec.prompt_tokens is None:
                self.prompt_unknown = True
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
        level: LoadLevel = BATCH,
        cell_repeat: int = 0,
        batcher=None,
        probe: int = 0,
    ):
        self.run_id, self.cell, self.technique = run_id, cell, technique
        self.engine, self.sampling, self.writer = engine, sampling, writer
        self.epoch = epoch
        self.repeats = repeats
        self._scorer, self._eval_scorer = scorer, eval_scorer
        self.skip_answers = skip_answers
        self.options = dict(options or {})
        self.session = session
        self.level = level
        self.load = level.label  # what the rows record
        self.cell_repeat = cell_repeat
        self.probe = probe  # a search re-probe of the same (cell, level, cell_repeat): 1, 2, ...
        self.batcher = batcher
        # (instance, text, session that wrote the answer): this one's, or an earlier one's (adopt_backlog)
        self._finished: list[tuple[PromptInstance, str, str | None]] = []
        self._scorable: list[tuple[PromptInstance, str, Any, str | None]] = []  # for run_scoring
        self._totals: dict[str, _AnswerTotals] = {}
        self._arrivals: dict[str, float] = {}
        self._admissions: dict[str, tuple[int, int | None]] = {}
        self._ids = itertools.count()
        self.answers_written = 0

    # -- ids ---------------------------------------------------------------------------------------
    @property
    def unit_tag(self) -> str:
        """'' for the default unit (offline batch, first cell repeat), so answer ids of a plain
        run read as before; '@LOAD#K' otherwise."""
        tag = "" if (self.level.is_batch and self.cell_repeat == 0) else f"@{self.load}#{self.cell_repeat}"
        return tag + (f".p{self.probe}" if self.probe else "")

    def expand(self, prompts: Sequence["Prompt"], answers: int | None = None) -> list[PromptInstance]:
        """Prompt x repeat instances still to answer (finished ones are skipped on resume).
        `answers`: exactly that many instances, prompts cycled (each further pass over the set is
        the next repeat), for a search probe's k x C answers."""
        out = []
        n_rep = self.repeats if answers is None else -(-answers // max(len(prompts), 1))
        count = 0
        for r in range(n_rep):
            for p in prompts:
                if answers is not None and count >= answers:
                    return out
                count += 1
                aid = f"{self.cell}{self.unit_tag}|{p.id}|{r}"
                if aid not in self.skip_answers:
                    out.append(PromptInstance(p, r, aid))
        return out

    def request(
        self, inst: PromptInstance, messages, *, n: int = 1, share_prefix: bool = True, max_tokens=None, continue_final: bool = False
    ) -> "GenRequest":
        from ..engines.base import GenRequest

        if max_tokens is None:
            # A source that needs longer answers than --max-tokens (HumanEval: 384; at 64 every
            # function is cut and pass@1 is 0 by construction) raises the cap for its prompts;
            # it never lowers the user's --max-tokens.
            need = getattr(getattr(inst.prompt, "spec", None), "default_max_tokens", None)
            if need and need > self.sampling.max_tokens:
                max_tokens = need
        return GenRequest(
            request_id=f"{inst.answer_id}#{next(self._ids)}",
            messages=tuple(messages),
            n=n,
            share_prefix=share_prefix,
            max_tokens=max_tokens,
            continue_final=continue_final,
        )

    @property
    def scorer(self):
        if self._scorer is None:
            raise RuntimeError(f"{self.technique} needs a reward model but none is configured")
        return self._scorer

    @property
    def has_eval_scorer(self) -> bool:
        return self._eval_scorer is not None

    def arrived(self, inst: PromptInstance, t: float) -> None:
        """The load generator released this answer at monotonic time t."""
        self._arrivals[inst.answer_id] = t

    def admitted(self, inst: PromptInstance, admission: int, slot: int | None) -> None:
        """The load generator's release order (within the unit) and closed-loop slot of this answer."""
        self._admissions[inst.answer_id] = (admission, slot)

    # -- calls ---------------------------------------------------------------------------------------
    async def generate(self, inst: PromptInstance, req: "GenRequest", *, stage: str, round: int | None = None) -> "GenResult":
        """One engine request (n samples) for one answer; one CallRecord."""
        res = await self.engine.agenerate(req, self.sampling)
        t_first = None if res.t_first_token_s is None else res.t_first_token_s - self.epoch
        t_submit = res.t_submit_s - self.epoch
        self._record(
            self._call(
                inst,
                stage,
                getattr(res, "batch_id", None),
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
                queue_s=res.queue_s,
                extra={"share_prefix": req.share_prefix},
            )
        )
        return res

    async def fits(self, messages) -> bool:
        """Whether the conversation leaves room for one output token in the engine's context.
        Tokenising may be remote (openai engine): off the event loop."""
        def _fits() -> bool:
            return self.engine.count_tokens(self.engine.render(messages)) < self.engine.max_model_len()

        return await asyncio.to_thread(_fits)

    async def score(self, inst: PromptInstance, responses: Sequence[str], *, stage: str = "score") -> list[float]:
        """Selection scoring of one answer's candidates through the reward micro-batcher."""
        if self.batcher is None:
            from ..rewards.batcher import RewardBatcher

            self.batcher = RewardBatcher(self.scorer)
        spec = getattr(inst.prompt, "spec", None)
        harmful = bool(spec is not None and spec.scorer == "refusal")
        out = await self.batcher.score(inst.prompt.text, list(responses), harmful=harmful)
        rec = self._call(
            inst,
            stage,
            f"s{out.batch_index}",
            n=len(responses),
            prompt_tokens=out.tokens,
            # tokens the reward model read from its own prefix cache (the judge's few-shot block)
            cached_prompt_tokens=out.cached_tokens,
            output_tokens=0,
            t_submit_s=out.t_submit_s - self.epoch,
            t_first_token_s=None,
            t_finish_s=out.t_finish_s - self.epoch,
            ttft_s=None,
            rewards=tuple(out.rewards),
            score_wait_s=out.wait_s,
            score_batch_pairs=out.batch_pairs,
            reward_tokens_computed=out.computed_tokens,
            extra={
                "reward_model": self.batcher.name,
                "kernel_path": out.path,
                "padding_fraction": out.padding_fraction,
                "score_batch_calls": out.batch_calls,
            },
        )
        self._record(rec)
        return list(out.rewards)

    def _call(self, inst: PromptInstance, stage: str, batch_id: str | None, owner: str | None = None, **fields) -> CallRecord:
        """A CallRecord for one answer's call; latency_s = t_finish_s - t_submit_s. `owner`: the
        session that wrote the answer, when an earlier one did (a resumed unit's evaluation)."""
        return CallRecord(
            run_id=self.run_id,
            cell=self.cell,
            call_id=f"{self.cell}{self.unit_tag}|c{next(self._ids)}",
            answer_id=inst.answer_id,
            prompt_id=inst.prompt.id,
            stage=stage,
            latency_s=fields["t_finish_s"] - fields["t_submit_s"],
            batch_id=batch_id,
            answer_ids=(inst.answer_id,),
            repeat=inst.answer_repeat,
            session=self.session if owner is None else owner,
            load=self.load,
            cell_repeat=self.cell_repeat,
            probe=self.probe,
            **fields,
        )

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
        candidate_texts: Sequence[str] | None = None,
        candidate_rewards: Sequence[float | None] | None = None,
        **extra: Any,
    ) -> None:
        """Write the answer's record. `candidate_texts`/`candidate_rewards`: every candidate of a
        best-of-N style technique (record fields); `extra`: the technique's own fields."""
        t = self._totals.get(inst.answer_id, _AnswerTotals())
        latency = (t.t_last_finish - t.t_first_submit) if t.t_first_submit is not None else 0.0
        arrival = self._arrivals.get(inst.answer_id)
        admission, slot = self._admissions.get(inst.answer_id, (None, None))
        self.writer.answer(
            AnswerRecord(
                run_id=self.run_id,
                cell=self.cell,
                answer_id=inst.answer_id,
                technique=self.technique,
                prompt_id=inst.prompt.id,
                text=text,
                calls=t.calls,
                prompt_tokens=None if t.prompt_unknown else t.prompt_tokens,
                output_tokens=t.output_tokens,
                latency_s=latency,
                cached_prompt_tokens=t.cached_prompt_tokens,
                prompt_set=inst.prompt.prompt_set,
                repeat=inst.answer_repeat,
                reward_tokens=t.reward_tokens,
                score_latency_s=t.score_latency_s,
                selection_reward=selection_reward,
                truncated=truncated,
                ttft_s=t.ttft_s,
                extra=extra,
                candidate_texts=None if candidate_texts is None else tuple(candidate_texts),
                candidate_rewards=None if candidate_rewards is None else tuple(candidate_rewards),
                session=self.session,
                load=self.load,
                cell_repeat=self.cell_repeat,
                t_arrival_s=None if arrival is None else arrival - self.epoch,
                t_finish_s=t.t_last_finish,
                admission=admission,
                slot=slot,
                probe=self.probe,
            )
        )
        self._queue_evaluation(inst, text, candidate_texts, self.session)

    def _queue_evaluation(self, inst: PromptInstance, text: str, candidates, session: str | None) -> None:
        self.answers_written += 1
        self._finished.append((inst, text, session))
        if inst.prompt.effective_scorer in ("pass_at_k", "refusal"):
            self._scorable.append((inst, text, candidates, session))

    def adopt_answer(self, inst: PromptInstance, rec: AnswerRecord) -> None:
        """An answer a client worker process finished and the caller wrote (costtax/run/client_workers.py):
        counted and queued for this unit's evaluation as if it had finished here."""
        self._queue_evaluation(inst, rec.text, rec.candidate_texts, rec.session)

    def adopt_backlog(self, prompts: Sequence["Prompt"], backlog) -> tuple[int, int]:
        """Queue the evaluation an earlier session never ran for answers it finished
        (rundir.evaluation_backlog: (its rundata.Answer, has eval call, has scores row)), so
        run_eval and run_scoring evaluate them once, with the rest of this unit; generation is
        not redone. Their rows carry the answer's session (the one reader counts a call or score
        only under its answer's session) and `evaluated_by_session`: this one. Returns
        (answers queued for eval, answers queued for scoring)."""
        insts = {f"{self.cell}{self.unit_tag}|{p.id}|{r}": PromptInstance(p, r, f"{self.cell}{self.unit_tag}|{p.id}|{r}")
                 for r in range(self.repeats) for p in prompts}
        n_eval = n_score = 0
        for ans, has_eval, has_score in backlog:
            inst = insts.get(ans.answer_id)
            if inst is None:  # not one of this run's prompts (cannot happen with an unchanged config)
                continue
            owner = ans.session
            if not has_eval and self._eval_scorer is not None:
                self._finished.append((inst, ans.text, owner))
                n_eval += 1
            if not has_score and inst.prompt.effective_scorer in ("pass_at_k", "refusal"):
                cands = None if ans.candidate_texts is None else list(ans.candidate_texts)
                self._scorable.append((inst, ans.text, cands, owner))
                n_score += 1
        return n_eval, n_score

    def pending_scoring(self) -> int:
        """Answers run_eval and run_scoring have still to score (the progress display's total)."""
        return (len(self._finished) if self._eval_scorer is not None else 0) + len(self._scorable)

    def run_scoring(self, refusal_judge=None, progress=None) -> int:
        """Score this unit's final answers by their sources' declared scorers (HumanEval's tests
        in the sandbox, refusal by rule and judge), after the metered window; one scores.jsonl
        row per answer. Returns the count scored."""
        if not self._scorable:
            return 0
        from ..prompts.grading import evaluate_answers

        items, self._scorable = self._scorable, []
        evals = evaluate_answers([i.prompt for i, *_ in items], [t for _, t, *_ in items], [c for _, _, c, _ in items],
                                 judge=refusal_judge, progress=progress)
        for (inst, _, _, owner), ev in zip(items, evals):
            ev = dict(ev)
            self.writer.scored(ScoreRecord(
                run_id=self.run_id, cell=self.cell, answer_id=inst.answer_id,
                prompt_id=ev.pop("prompt_id", inst.prompt.id), scorer=ev.pop("scorer", None), source=ev.pop("source", None),
                load=self.level, cell_repeat=self.cell_repeat, session=owner,
                evaluated_by_session=None if owner == self.session else self.session, values=ev,
            ))
        return len(items)

    def run_eval(self, chunk: int = 64, progress=None) -> int:
        """Score this unit's final answers with the evaluation reward model (stage=eval).

        Called by the runner after the unit's metered window: evaluation is not part of the
        technique's cost. Synchronous, in chunks of `chunk` answers. Returns the count scored.
        `progress(done)`: answers scored so far, after each batch (rewards/progress.py)."""
        from ..rewards.progress import batch_progress

        if self._eval_scorer is None or not self._finished:
            return 0
        items, self._finished = self._finished, []
        for lo in range(0, len(items), chunk):
            part = items[lo : lo + chunk]
            flags = [bool(getattr(i.prompt, "spec", None) and i.prompt.spec.scorer == "refusal") for i, *_ in part]
            kwargs = {"harmful": flags} if any(flags) else {}  # the RewardModel protocol's flag
            t0 = time.monotonic()
            with batch_progress(self._eval_scorer, len(part), progress and (lambda k, _n, lo=lo: progress(lo + k))):
                res = self._eval_scorer.score([i.prompt.text for i, *_ in part], [t for _, t, _ in part], **kwargs)
            t1 = time.monotonic()
            cached = list(getattr(res, "cached_tokens", ()) or ())
            for k, (inst, _, owner) in enumerate(part):
                self.writer.call(
                    self._call(
                        inst,
                        "eval",
                        f"e{lo // chunk}",
                        owner=owner,
                        n=1,
                        prompt_tokens=int(res.tokens[k]),
                        cached_prompt_tokens=int(cached[k]) if cached else None,
                        output_tokens=0,
                        t_submit_s=t0 - self.epoch,
                        t_first_token_s=None,
                        t_finish_s=t1 - self.epoch,
                        ttft_s=None,
                        rewards=(float(res.rewards[k]),),
                        evaluated_by_session=None if owner == self.session else self.session,
                        extra={"reward_model": getattr(self._eval_scorer, "name", "eval"), "kernel_path": getattr(res, "path", None)},
                    )
                )
        return len(items)
