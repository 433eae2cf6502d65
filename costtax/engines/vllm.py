"""vLLM offline engine (`vllm.LLM`).

Measurement choices recorded here:
- Stats on (`disable_log_stats=False`): request metrics give first/last token timestamps and
  `get_metrics()` gives prefix-cache queries/hits.
- Prefix caching is explicit (on by default) and recorded: best-of-N with n>1 shares the prompt
  prefill. `share_prefix=False` requests get a distinct `cache_salt` per sample so the n samples
  cannot share it: that is the naive layout (n separate requests, n prefills).
- Prompts are passed as token ids rendered with the model's chat template, so the prompt token
  counts we record are exactly what the engine saw.
- On CPU: fp32 + `enforce_eager=True` (bf16 is slow without AMX/AVX512-BF16 and torch.compile
  costs minutes at start), a 1 GiB KV cache, OpenMP threads bound to every core we may use.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any, Sequence

from ..errors import EngineUnavailable
from ._chat import ChatTemplateMixin
from .base import BatchStats, GenRequest, GenResult, Sample, SamplingSpec

GAUGE_INTERVAL_S = 0.5
_CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


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
        gpu_memory_utilization: float = 0.85,
        trust_remote_code: bool = False,
        block_size: int | None = None,
    ):
        self.model_dir = str(model_dir)
        self.seed = seed
        self._dtype = dtype
        self._max_model_len = max_model_len
        self.enable_prefix_caching = enable_prefix_caching
        self.gpu_memory_utilization = gpu_memory_utilization
        self.trust_remote_code = trust_remote_code
        self.block_size = block_size
        self._llm = None
        self._tok = None
        self._on_cuda = False
        self._env: dict[str, str] = {}
        self._last_stats = BatchStats()
        self._start_s: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> float:
        if self._llm is not None:
            return self._start_s or 0.0
        t0 = time.monotonic()
        self._on_cuda = _cuda_available()
        if not self._on_cuda:
            cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
            env = dict(_CPU_ENV_DEFAULTS)
            env["VLLM_CPU_OMP_THREADS_BIND"] = f"{min(cpus)}-{max(cpus)}"
            for k, v in env.items():
                os.environ.setdefault(k, v)
            self._env = {k: os.environ[k] for k in env}
        try:
            from vllm import LLM
        except Exception as exc:  # ImportError, or a broken install
            raise EngineUnavailable(
                f"vllm is not importable here ({type(exc).__name__}: {exc}); use --engine hf or run `make setup`"
            ) from exc
        dtype = self._dtype or ("auto" if self._on_cuda else "float32")
        kwargs: dict[str, Any] = dict(
            model=self.model_dir,
            dtype=dtype,
            seed=self.seed,
            max_model_len=self._max_model_len,
            enable_prefix_caching=self.enable_prefix_caching,
            disable_log_stats=False,
            trust_remote_code=self.trust_remote_code,
        )
        if self._on_cuda:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        else:
            kwargs["enforce_eager"] = True
            # vLLM's CPU default KV block is 128 tokens and only full blocks are cached, so chat
            # prompts shorter than 128 tokens would never hit the prefix cache. 32 is the smallest
            # size the CPU attention backend accepts without a warning (multiples of 32).
            kwargs["block_size"] = self.block_size or 32
        if self.block_size and self._on_cuda:
            kwargs["block_size"] = self.block_size
        self._kwargs = {k: v for k, v in kwargs.items() if k != "model"}
        self._llm = LLM(**kwargs)
        self._tok = self._llm.get_tokenizer()
        self._start_s = time.monotonic() - t0
        return self._start_s

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        try:
            shutdown = getattr(llm.llm_engine, "shutdown", None) or getattr(
                getattr(llm.llm_engine, "engine_core", None), "shutdown", None
            )
            if shutdown:
                shutdown()
        except Exception:
            pass
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
            return bool(llm.reset_prefix_cache())
        except Exception:
            return False

    def last_batch_stats(self) -> BatchStats:
        return self._last_stats

    def _gauges(self) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            for m in self._require().get_metrics():
                if m.name in ("vllm:kv_cache_usage_perc", "vllm:num_requests_running", "vllm:num_requests_waiting"):
                    out[m.name] = float(getattr(m, "value", 0.0))
        except Exception:
            pass
        return out

    def _prefix_counters(self) -> tuple[int | None, int | None]:
        try:
            metrics = self._require().get_metrics()
        except Exception:
            return None, None
        q = h = None
        for m in metrics:
            if m.name == "vllm:prefix_cache_queries":
                q = int(getattr(m, "value", 0))
            elif m.name == "vllm:prefix_cache_hits":
                h = int(getattr(m, "value", 0))
        return q, h

    # -- generation ------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        from vllm import SamplingParams

        llm = self._require()
        prompts: list[dict] = []
        params: list[Any] = []
        owners: list[int] = []  # which GenRequest each vLLM request belongs to
        prompt_lens: list[int] = []
        for i, req in enumerate(requests):
            ids, max_tokens = self._prompt_ids(req, sampling.max_tokens)
            prompt_lens.append(len(ids))
            # Every sample is its own vLLM request (n=1). vLLM V1 implements SamplingParams(n=N) as
            # N child requests anyway, but then reports one num_cached_tokens for the parent;
            # fanning out here gives exact per-sample prefix-cache accounting at the same cost.
            # share_prefix=False adds a distinct cache_salt per sample so the N samples cannot
            # reuse each other's prefill (the naive layout). No per-request seed: the engine seed
            # (LLM(seed=...)) makes a run reproducible for a fixed batch.
            sp = SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=max_tokens)
            for _ in range(req.n):
                prompt: dict = {"prompt_token_ids": ids}
                if not req.share_prefix:
                    prompt["cache_salt"] = uuid.uuid4().hex
                prompts.append(prompt)
                params.append(sp)
                owners.append(i)
        q0, h0 = self._prefix_counters()
        # KV-cache usage is a gauge that falls back to ~0 when the batch ends: sample it from a
        # side thread while generate() runs (the Prometheus registry is thread-safe). Every
        # 0.5 s: get_metrics() snapshots every metric in Python and, at 20 Hz, competed with
        # vLLM's own output loop for the GIL (bench/results/FIDELITY.md).
        peaks: dict[str, float] = {}
        stop = threading.Event()

        def sample_gauges():
            while not stop.wait(GAUGE_INTERVAL_S):
                for k, v in self._gauges().items():
                    peaks[k] = max(peaks.get(k, 0.0), v)

        sampler = threading.Thread(target=sample_gauges, daemon=True)
        sampler.start()
        t_submit = time.monotonic()
        try:
            outputs = llm.generate(prompts, params, use_tqdm=False)
        finally:
            t_end = time.monotonic()
            stop.set()
            sampler.join(timeout=1.0)
        q1, h1 = self._prefix_counters()
        self._last_stats = BatchStats(
            prefix_cache_queries=None if q0 is None or q1 is None else q1 - q0,
            prefix_cache_hits=None if h0 is None or h1 is None else h1 - h0,
            extra={
                "kv_cache_usage_peak": peaks.get("vllm:kv_cache_usage_perc"),
                "requests_running_peak": peaks.get("vllm:num_requests_running"),
            },
        )

        grouped: dict[int, list] = {}
        for owner, out in zip(owners, outputs):
            grouped.setdefault(owner, []).append(out)
        results = []
        for i, req in enumerate(requests):
            outs = grouped[i]
            samples: list[Sample] = []
            firsts: list[float] = []
            lasts: list[float] = []
            cached = 0
            cached_known = True
            for out in outs:
                for c in out.outputs:
                    samples.append(Sample(text=c.text, token_ids=tuple(c.token_ids), finish_reason=c.finish_reason))
                m = getattr(out, "metrics", None)
                ft = getattr(m, "first_token_ts", 0.0) if m is not None else 0.0
                lt = getattr(m, "last_token_ts", 0.0) if m is not None else 0.0
                # Engine-core timestamps are time.monotonic() in another process: same clock.
                if ft and t_submit - 1.0 <= ft <= t_end + 1.0:
                    firsts.append(ft)
                if lt and t_submit - 1.0 <= lt <= t_end + 1.0:
                    lasts.append(lt)
                if out.num_cached_tokens is None:
                    cached_known = False
                else:
                    cached += int(out.num_cached_tokens)
            n_prefills = len(outs)
            plen = prompt_lens[i]
            results.append(
                GenResult(
                    request_id=req.request_id,
                    samples=tuple(samples),
                    prompt_tokens=plen,
                    prompt_tokens_computed=max(plen * n_prefills - cached, 0) if cached_known else plen * n_prefills,
                    cached_prompt_tokens=cached if cached_known else None,
                    t_submit_s=t_submit,
                    t_first_token_s=min(firsts) if firsts else None,
                    t_finish_s=max(lasts) if len(lasts) == len(outs) else t_end,
                    ttft_source="engine" if firsts else None,
                )
            )
        return results

    def provenance(self) -> dict[str, Any]:
        import importlib.metadata as md

        def ver(dist):
            try:
                return md.version(dist)
            except md.PackageNotFoundError:
                return None

        return {
            "engine": self.name,
            "model_dir": self.model_dir,
            "vllm_version": ver("vllm") or ver("vllm-cpu"),
            "vllm_distribution": "vllm" if ver("vllm") else ("vllm-cpu" if ver("vllm-cpu") else None),
            "dtype": (self._kwargs.get("dtype") if self._llm is not None else self._dtype),
            "prefix_caching": self.enable_prefix_caching,
            "enforce_eager": not self._on_cuda,
            "max_model_len": self._max_model_len,
            "kv_block_size": self._kwargs.get("block_size") if self._llm is not None else self.block_size,
            "engine_seed": self.seed,
            "engine_env": self._env,
            "engine_start_s": self._start_s,
        }
