"""Hugging Face transformers engine: `generate` with left padding; the fallback without vLLM.

Measurement choices:
- No prefix cache: every sample prefills its whole prompt, so `cached_prompt_tokens` is 0 (exact,
  not unknown) and `prompt_tokens_computed` = n x prompt tokens (padding not counted).
- TTFT is batch-level: a logits processor stamps the first decoding step of each generate()
  chunk; every request in the chunk gets that time (`ttft_source="batch"`).
- Samples of all requests are flattened and run in chunks of `max_batch` sequences, sorted by
  prompt length to limit padding.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from ._chat import ChatTemplateMixin
from .base import BatchStats, GenRequest, GenResult, Sample, SamplingSpec


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
    ):
        self.model_dir = str(model_dir)
        self.seed = seed
        self._dtype_name = dtype
        self._device_name = device
        self.max_batch = max_batch
        self._max_model_len = max_model_len
        self.trust_remote_code = trust_remote_code
        self._model = None
        self._tok = None
        self._start_s: float | None = None

    def start(self) -> float:
        if self._model is not None:
            return self._start_s or 0.0
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.monotonic()
        device = self._device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        if self._dtype_name:
            dtype = getattr(torch, self._dtype_name)
        else:
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
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
        self._model = None
        import gc

        gc.collect()

    def _started(self) -> bool:
        return self._model is not None

    def reset_prefix_cache(self) -> bool:
        return False  # nothing to reset: HF generate keeps no cache across calls

    def last_batch_stats(self) -> BatchStats:
        return BatchStats()

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingSpec) -> list[GenResult]:
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
        eos = tok.eos_token_id
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
            with torch.inference_mode():
                out = model.generate(**gen_kwargs)
            t_done = time.monotonic()
            for row, (i, ids, m) in enumerate(chunk):
                new = out[row, width:].tolist()[:m]
                reason = "length"
                if eos is not None and eos in new:
                    new = new[: new.index(eos)]
                    reason = "stop"
                elif eos is not None and pad == eos:
                    pass
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
            "max_model_len": self._max_model_len,
            "engine_seed": self.seed,
            "engine_start_s": self._start_s,
        }
