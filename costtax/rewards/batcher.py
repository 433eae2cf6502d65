"""Reward scoring under load: a micro-batcher between concurrent answers and one reward model.

Concurrent best-of-N answers each ask for their N candidates to be scored. Scoring them one
call at a time would hand the reward model (and costtax.kernels) batches of N; the batcher
collects the score calls that arrive while the previous batch runs (up to `max_pairs`
prompt/response pairs, or `max_wait_s` after the first one) and runs them as one pass.
Measurement choices: one batch in flight at a time (one reward model, one device); every score
call records the batch it rode in (`score_batch_pairs`, `score_batch_calls`) and how long it
waited in the batcher (`score_wait_s`), so batching cost is visible, not hidden in latency.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class ScoreOutcome:
    rewards: tuple[float, ...]
    tokens: int  # reward-model tokens read for this call's pairs
    cached_tokens: int | None  # of those, read from the reward model's own prefix cache
    computed_tokens: int | None  # of those, computed (None when the scorer does not say)
    t_submit_s: float  # time.monotonic()
    t_start_s: float  # the batch started on the reward model
    t_finish_s: float
    batch_pairs: int
    batch_calls: int
    path: str | None = None
    padding_fraction: float | None = None
    batch_index: int = 0

    @property
    def wait_s(self) -> float:
        return self.t_start_s - self.t_submit_s


@dataclass
class _Pending:
    prompt: str
    responses: list[str]
    t_submit: float
    future: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]
    harmful: bool = False  # the prompt's source declares it a harmful request


def _seq(res, name: str) -> list | None:
    v = getattr(res, name, None)
    if v is None:
        return None
    v = list(v)
    return v or None


class RewardBatcher:
    """Batches score calls from concurrent answers on one event loop (create one per loop)."""

    def __init__(self, scorer, *, max_pairs: int = 64, max_wait_s: float = 0.005, gather_s: float = 0.0, in_flight=None):
        if max_pairs < 1:
            raise ValueError("max_pairs must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.scorer = scorer
        self.max_pairs = max_pairs
        self.max_wait_s = max_wait_s
        # Gather policy (off at 0): hold a pass up to gather_s after its first call while fewer
        # calls are in it than answers in flight (`in_flight()`, set by the load driver), so a
        # closed loop's answers score together instead of splitting into cohorts that alternate
        # on the reward model (README "Capacity search": why best-of-4 did not reproduce).
        self.gather_s = gather_s
        self.in_flight = in_flight
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self.batches: list[dict[str, Any]] = []  # size and wait of every batch, for the cell record

    @property
    def name(self) -> str:
        return getattr(self.scorer, "name", type(self.scorer).__name__)

    async def score(self, prompt: str, responses: Sequence[str], *, harmful: bool = False) -> ScoreOutcome:
        """`harmful`: the prompt's source declares it a harmful request; it reaches the reward
        model as the RewardModel protocol's `harmful=` flag per pair when a batch holds one."""
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._worker())
        item = _Pending(prompt, list(responses), time.monotonic(), loop.create_future(), harmful)
        await self._queue.put(item)
        return await item.future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._task = self._queue = None

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        pairs = len(batch[0].responses)
        t_first = time.monotonic()
        deadline = t_first + self.max_wait_s
        while pairs < self.max_pairs:
            # Take what is already queued without waiting; then wait at most until the deadline.
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                limit = deadline
                if self.gather_s > 0 and self.in_flight is not None and len(batch) < self.in_flight():
                    limit = max(deadline, t_first + self.gather_s)
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(nxt)
            pairs += len(nxt.responses)
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            prompts = [p.prompt for p in batch for _ in p.responses]
            responses = [r for p in batch for r in p.responses]
            flags = [p.harmful for p in batch for _ in p.responses]
            kwargs = {"harmful": flags} if any(flags) else {}  # the RewardModel protocol's flag
            t_start = time.monotonic()
            try:
                # The reward model is synchronous torch work: run it off the event loop so
                # generation calls keep flowing while it scores.
                res = await loop.run_in_executor(None, lambda: self.scorer.score(prompts, responses, **kwargs))
            except asyncio.CancelledError:
                # aclose() while a pass runs (a level stopped early or timed out): end the worker;
                # swallowing this and looping back to the queue would hang aclose() for ever.
                for p in batch:
                    if not p.future.done():
                        p.future.cancel()
                raise
            except BaseException as exc:  # KeyboardInterrupt too: the awaiting answers re-raise it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            t_end = time.monotonic()
            idx = len(self.batches)
            self.batches.append({"pairs": len(responses), "calls": len(batch), "wait_s": t_start - min(p.t_submit for p in batch), "score_s": t_end - t_start})
            rewards = [float(r) for r in res.rewards]
            tokens = list(res.tokens)
            cached = _seq(res, "cached_tokens")
            computed = _seq(res, "computed_tokens")
            lo = 0
            for p in batch:
                hi = lo + len(p.responses)
                out = ScoreOutcome(
                    rewards=tuple(rewards[lo:hi]),
                    tokens=int(sum(tokens[lo:hi])),
                    cached_tokens=int(sum(cached[lo:hi])) if cached is not None else None,
                    computed_tokens=int(sum(computed[lo:hi])) if computed is not None else None,
                    t_submit_s=p.t_submit,
                    t_start_s=t_start,
                    t_finish_s=t_end,
                    batch_pairs=len(responses),
                    batch_calls=len(batch),
                    path=getattr(res, "path", None),
                    padding_fraction=getattr(res, "padding_fraction", None),
                    batch_index=idx,
                )
                if not p.future.done():
                    p.future.set_result(out)
                lo = hi
