"""Hugging Face transformers engine: `generate` with left padding; the fallback without vLLM.

Measurement choices:
- No prefix cache: every sample prefills its whole prompt, so `cached_prompt_tokens` is 0 (exact,
  not unknown) and `prompt_tokens_computed` = n x prompt tokens (padding not counted).
- TTFT is batch-level: a logits processor stamps the first decoding step of each generate()
  chunk; every request in the chunk gets that time (`ttft_source="batch"`).
- Samples of all requests are flattened and run in chunks of `max_batch` sequences, sorted by
  prompt length to limit padding.
- Under load (`agenerate`), a batching worker (engines/batching.py) gathers concurrent requests
  into batches of at most `max_batch` sequences, waiting at most `max_wait_ms` for company when
  it is idle; `queue_s` is the time a request waited in that queue (including behind a running
  batch) and `t_submit_s` is when it entered it. Batches run one at a time, never overlapping
  a sync `generate`.
- EOS is every id in the model's generation_config `eos_token_id` plus the tokenizer's; the
  sample is cut before the first one. `ignore_eos` sets `min_new_tokens` to the chunk's
  max_new_tokens, which masks EOS logits, so every sample is exactly its max_tokens long.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from ._chat import ChatTemplateMixin
from .base import BatchStats, GenRequest, GenResult, Sample, SamplingSpec
from ..devices import pick_device_dtype
from .batching import DEFAULT_MAX_WAIT_MS, BatchingWorker


class HFEngine(ChatTemplateMixin):
    name = "hf"

    def __init__(
        self,
        model_dir: str,
        *,
        seed: int = 0,
        dtype: str | None = None,
        device: str | None = None,
        max_batch: int = 16,
        max_model_len: int = 2048,
        trust_remote_code: bool = False,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    ):
        self.model_dir = str(model_dir)
        self.seed = seed
        self._dtype_name = dtype
        self._device_name = device
        self.max_batch = max_batch
        self._max_model_len = max_model_len
        self.trust_remote_code = trust_remote_code
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_wait_ms = float(max_wait_ms)
        self._model = None
        self._tok = None
        self._start_s: float | None = None
        self._gen_lock = threading.RLock()  # one generate at a time: sync callers and the batcher
        self._batcher: BatchingWorker | None = None
        self._batcher_lock = threading.Lock()

    def start(self) -> float:
        if self._model is not None:
            return self._start_s or 0.0
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.monotonic()
        device, dtype = pick_device_dtype(self._device_name, self._dtype_name)
        tok = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=self.trust_remote_code)
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=dtype, trust_remote_code=self.trust_remote_code, use_safetensors=None
        ).to(device)
        model.eval()
        self._tok, self._model = tok, model
        self._device, self._dtype = device, dtype
        torch.manual_seed(self.seed)
        self._start_s = time.monotonic() - t0
        return self._start_s

    def close(self) -> None:
        # The batcher first: queued requests fail with EngineClosed, a running batch finishes.
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()
        self._model = None
        import gc

        gc.collect()

    def _started(self) -> bool:
        return self._model is not None

    def reset_prefix_cache(self) -> bool:
        return False  # nothing to reset: HF generate keeps no cache across calls

    def last_batch_stats(self) -> BatchStats:
        return BatchStats()

    # -- under load ----------------------------------------------------------------------------
    def _worker(self) -> BatchingWorker:
        self._require_started()
        with self._batcher_lock:
            if self._batcher is None:
                self._batcher = BatchingWorker(self.generate, max_batch=self.max_batch, max_wait_ms=self.max_wait_ms, name="hf-batcher")
            return self._batcher

    async def agenerate(self, request: GenRequest, sampling: SamplingSpec) -> GenResult:
        """One request through the batching worker; awaitable from any event loop."""
        # Validate here so a prompt over the context fails alone, not the batch it would join.
        self._prompt_ids(request, sampling.max_tokens)
        return await self._worker().agenerate(request, sampling)

    def counters(self) -> dict[str, Any]:
        """The batcher's counts (batches, batched_requests, batched_seqs, failed_batches,
        batch_seqs_max) and queue (num_requests_waiting, num_requests_running); no prefix
        cache or KV gauges on this engine. {} before the first agenerate."""
        batcher = self._batcher
        return batcher.counters() if batcher is not None else {}

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        with self._gen_lock:
            return self._generate(requests, sampling)

    def _generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList

        self._require_started()
        model, tok = self._model, self._tok
        flat: list[tuple[int, list[int], int]] = []  # (request index, prompt ids, max_tokens)
        plens = []
        for i, req in enumerate(requests):
            ids, max_tokens = self._prompt_ids(req, sampling.max_tokens)
            plens.append(len(ids))
            flat.extend((i, ids, max_tokens) for _ in range(req.n))
        order = sorted(range(len(flat)), key=lambda k: (flat[k][2], len(flat[k][1])))

        class _FirstStep(LogitsProcessor):
            def __init__(self):
                self.t = None

            def __call__(self, input_ids, scores):
                if self.t is None:
                    self.t = time.monotonic()
                return scores

        samples: list[list[Sample]] = [[] for _ in requests]
        first: dict[int, float] = {}
        finish: dict[int, float] = {}
        t_submit = time.monotonic()
        eos_ids = self._eos_ids()
        for c in range(0, len(order), self.max_batch):
            chunk = [flat[k] for k in order[c : c + self.max_batch]]
            max_new = max(m for _, _, m in chunk)
            width = max(len(ids) for _, ids, _ in chunk)
            pad = tok.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids, _ in chunk], device=self._device)
            attn = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids, _ in chunk], device=self._device)
            hook = _FirstStep()
            do_sample = sampling.temperature > 0
            gen_kwargs: dict[str, Any] = dict(
                input_ids=input_ids,
                attention_mask=attn,
                max_new_tokens=max_new,
                do_sample=do_sample,
                pad_token_id=pad,
                logits_processor=LogitsProcessorList([hook]),
            )
            if do_sample:
                gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            if sampling.ignore_eos:
                # EOS logits masked until max_new tokens: no row stops early.
                gen_kwargs["min_new_tokens"] = max_new
            with torch.inference_mode():
                out = model.generate(**gen_kwargs)
            t_done = time.monotonic()
            for row, (i, ids, m) in enumerate(chunk):
                new = out[row, width:].tolist()[:m]
                reason = "length"
                if not sampling.ignore_eos:
                    cut = next((k for k, t in enumerate(new) if t in eos_ids), None)
                    if cut is not None:
                        new, reason = new[:cut], "stop"
                samples[i].append(
                    Sample(text=tok.decode(new, skip_special_tokens=True), token_ids=tuple(new), finish_reason=reason)
                )
                if hook.t is not None:
                    first[i] = min(first.get(i, hook.t), hook.t)
                finish[i] = t_done
        return [
            GenResult(
                request_id=req.request_id,
                samples=tuple(samples[i]),
                prompt_tokens=plens[i],
                prompt_tokens_computed=plens[i] * req.n,
                cached_prompt_tokens=0,
                t_submit_s=t_submit,
                t_first_token_s=first.get(i),
                t_finish_s=finish[i],
                ttft_source="batch" if i in first else None,
            )
            for i, req in enumerate(requests)
        ]

    def _eos_ids(self) -> set[int]:
        ids = self._model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
        if self._tok.eos_token_id is not None:
            ids.add(self._tok.eos_token_id)
        return ids

    def provenance(self) -> dict[str, Any]:
        import importlib.metadata as md

        return {
            "engine": self.name,
            "model_dir": self.model_dir,
            "transformers_version": md.version("transformers"),
            "dtype": str(getattr(self, "_dtype", self._dtype_name)).replace("torch.", ""),
            "device": getattr(self, "_device", self._device_name),
            "prefix_caching": False,
            "max_batch": self.max_batch,
            "batcher_max_wait_ms": self.max_wait_ms,
            "max_model_len": self._max_model_len,
            "engine_seed": self.seed,
            "engine_start_s": self._start_s,
        }
