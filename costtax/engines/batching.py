"""A batching worker: any synchronous batched `Engine` as an `AsyncEngine`.

Concurrent `agenerate` calls (from any event loop, any thread) land in one FIFO queue. A single
worker thread forms batches and runs them through the wrapped engine's `generate`, one batch at
a time, then resolves each request's future. This is how the HF engine is loaded like a server
(and the fallback for engines without their own scheduler).

Measurement choices recorded here:
- A batch holds at most `max_batch` sequences (samples: the sum of `n` over its requests); a
  request with n > max_batch goes alone (the engine chunks it). Requests join in arrival order;
  a request whose sampling settings differ from the batch head's waits for a later batch (one
  `generate` call takes one SamplingSpec) without blocking compatible requests behind it.
- The worker dispatches when the batch is full, or when the oldest queued request has waited
  `max_wait_ms`. While a batch runs, new arrivals queue up, so under load batches fill without
  waiting: `max_wait_ms` only matters when the worker is idle.
- `t_submit_s` of a result is when `agenerate` handed the request to the batcher, and `queue_s`
  is the time it waited there until its batch was dispatched; the engine's own timestamps
  (first token, finish) are kept. So latency and TTFT include the batcher's queueing.
- An exception in a batch fails the futures of that batch only; the worker carries on.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from .base import BatchStats, Engine, GenRequest, GenResult, Message, SamplingSpec

DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_MS = 10.0


class EngineClosed(RuntimeError):
    """The batching worker was closed before the request ran."""


@dataclass
class _Item:
    request: GenRequest
    sampling: SamplingSpec
    t_enqueue: float
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class BatchingWorker:
    """The queue and the worker thread; `run_batch` is any sync batched generate function."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[GenRequest], SamplingSpec], list[GenResult]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        name: str = "batcher",
    ):
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self._cv = threading.Condition()
        self._pending: deque[_Item] = deque()
        self._closed = False
        self._running_requests = 0
        self._stats = {"batches": 0, "batched_requests": 0, "batched_seqs": 0, "failed_batches": 0, "batch_seqs_max": 0}
        self._thread = threading.Thread(target=self._loop, name=f"costtax-{name}", daemon=True)
        self._thread.start()

    # -- submission ------------------------------------------------------------------------------
    def submit(self, request: GenRequest, sampling: SamplingSpec) -> concurrent.futures.Future:
        item = _Item(request, sampling, time.monotonic())
        with self._cv:
            if self._closed:
                raise EngineClosed("the batching worker is closed")
            self._pending.append(item)
            self._cv.notify()
        return item.future

    async def agenerate(self, request: GenRequest, sampling: SamplingSpec) -> GenResult:
        # wrap_future binds the thread-safe future to whichever loop awaits it; cancelling the
        # awaiting task cancels the future, and the worker then skips the request.
        return await asyncio.wrap_future(self.submit(request, sampling))

    def counters(self) -> dict[str, Any]:
        """Cumulative batch counts and the current queue: batches, batched_requests,
        batched_seqs, failed_batches, batch_seqs_max, num_requests_waiting (queued in the
        batcher), num_requests_running (in the batch being generated)."""
        with self._cv:
            out: dict[str, Any] = dict(self._stats)
            out["num_requests_waiting"] = len(self._pending)
            out["num_requests_running"] = self._running_requests
        return out

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking requests, fail the queued ones with EngineClosed, let a running batch
        finish (up to `timeout`) and stop the thread."""
        with self._cv:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._cv.notify_all()
        for it in dropped:
            if it.future.set_running_or_notify_cancel():
                it.future.set_exception(EngineClosed("the engine was closed before this request ran"))
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- the worker ------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Item]:
        """Under the lock: the head, then compatible requests in arrival order while they fit."""
        head = self._pending[0]
        batch, seqs = [], 0
        for it in list(self._pending):
            if it.sampling != head.sampling:
                continue
            if batch and seqs + it.request.n > self.max_batch:
                break
            batch.append(it)
            seqs += it.request.n
            if seqs >= self.max_batch:
                break
        for it in batch:
            self._pending.remove(it)
        return batch

    def _ready(self) -> bool:
        """Under the lock: is a full batch queued for the head's sampling settings?"""
        head = self._pending[0]
        seqs = 0
        for it in self._pending:
            if it.sampling != head.sampling:
                continue
            if seqs and seqs + it.request.n > self.max_batch:
                return True  # the next compatible request would not fit
            seqs += it.request.n
            if seqs >= self.max_batch:
                return True
        return False

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                deadline = self._pending[0].t_enqueue + self.max_wait_s
                while not self._closed and not self._ready():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                if self._closed:
                    return
                batch = [it for it in self._take_batch() if it.future.set_running_or_notify_cancel()]
                self._running_requests = len(batch)
            if batch:
                self._dispatch(batch)
            with self._cv:
                self._running_requests = 0

    def _dispatch(self, batch: list[_Item]) -> None:
        t_dispatch = time.monotonic()
        seqs = sum(it.request.n for it in batch)
        try:
            results = self._run_batch([it.request for it in batch], batch[0].sampling)
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} requests")
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the waiting callers
            with self._cv:
                self._stats["failed_batches"] += 1
            for it in batch:
                it.future.set_exception(exc)
            return
        with self._cv:
            batch_id = f"w{self._stats['batches']}"
            self._stats["batches"] += 1
            self._stats["batched_requests"] += len(batch)
            self._stats["batched_seqs"] += seqs
            self._stats["batch_seqs_max"] = max(self._stats["batch_seqs_max"], seqs)
        for it, res in zip(batch, results):
            # batch_id: the engine batch that served the request (the cold-start detector compares
            # the first batch of a unit with the others).
            it.future.set_result(replace(res, t_submit_s=it.t_enqueue, queue_s=t_dispatch - it.t_enqueue, batch_id=batch_id))


class BatchingEngine:
    """Wraps a synchronous batched `Engine` so it is also an `AsyncEngine`.

    `agenerate` goes through a `BatchingWorker`; the sync API is forwarded to the wrapped
    engine. Sync `generate` and the worker's batches never run at the same time (one lock), so
    an engine that is not thread-safe stays safe. Close order: the worker first (queued requests
    fail with EngineClosed), then the engine.
    """

    def __init__(self, engine: Engine, *, max_batch: int = DEFAULT_MAX_BATCH, max_wait_ms: float = DEFAULT_MAX_WAIT_MS):
        self.engine = engine
        self.name = engine.name
        self._lock = threading.Lock()
        self._worker = BatchingWorker(self._locked_generate, max_batch=max_batch, max_wait_ms=max_wait_ms, name=f"{engine.name}-batcher")

    def _locked_generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        with self._lock:
            return self.engine.generate(requests, sampling)

    async def agenerate(self, request: GenRequest, sampling: SamplingSpec) -> GenResult:
        return await self._worker.agenerate(request, sampling)

    def counters(self) -> dict[str, Any]:
        return self._worker.counters()

    # -- the sync Engine API, forwarded ----------------------------------------------------------
    def start(self) -> float:
        return self.engine.start()

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        return self._locked_generate(requests, sampling)

    def render(self, messages: Sequence[Message], continue_final: bool = False) -> str:
        return self.engine.render(messages, continue_final=continue_final) if continue_final else self.engine.render(messages)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def max_model_len(self) -> int:
        return self.engine.max_model_len()

    def reset_prefix_cache(self) -> bool:
        return self.engine.reset_prefix_cache()

    def last_batch_stats(self) -> BatchStats:
        return self.engine.last_batch_stats()

    def provenance(self) -> dict[str, Any]:
        prov = dict(self.engine.provenance())
        prov["batcher"] = {"max_batch_seqs": self._worker.max_batch, "max_wait_ms": self._worker.max_wait_s * 1000.0}
        return prov

    def close(self) -> None:
        self._worker.close()
        self.engine.close()
