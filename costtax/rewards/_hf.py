"""Shared machinery for transformers-based reward models: load, tokenise, batch, run the body.

A reward model here is a transformer *body* (embeddings ... final norm) followed by a head
that is read at one row per sequence. We never run the model's own head over every position:
the body's last hidden states go to a ``costtax.kernels`` op (``reward_head`` for a scalar
head, ``judge_head`` for k rows of an LM head) which reads only the score rows.

Batching (``batching=``):

* ``"padded"`` (default on CPU and on CUDA without flash-attn): sequences are sorted by length
  and cut into buckets of consecutive sorted sequences (at most ``max_batch`` sequences and
  ``max_tokens`` padded positions each), right-padded, run as ``[b, L]``; the hidden states
  are flattened to ``[b*L, H]`` with ``cu_seqlens = arange(b+1) * L`` and ``positions`` = the
  row of each sequence's last real token. ``padding_fraction`` = padded positions / all
  positions computed.
* ``"packed"`` (default on CUDA when flash-attn is installed): sequences are concatenated into
  one row (``[1, T]``, at most ``max_tokens`` tokens per pack) with ``position_ids`` restarting
  at 0 for each sequence and no attention mask; transformers then attends within each sequence
  (flash-attn varlen; with sdpa/eager it builds a block-diagonal ``T x T`` mask, which is
  correct but spends ``T^2`` attention work -- that is why ``auto`` packs only with flash-attn).
  ``cu_seqlens`` are the real boundaries and the score row is each sequence's last token;
  ``padding_fraction`` is 0.0.

Shared prefix (``prefix_cache=True``, padded batching): when every scored sequence starts
with the same tokens (a judge's instructions and worked examples), their KV cache is computed
once at load and each bucket runs only the suffixes on a copy of it, with position ids and
the attention mask continuing after the prefix. A load-time check compares one probe pair
with and without the cache; any failure switches the cache off (provenance says why).
Sequences that do not start with exactly the prefix ids run in full. ``ScoreBatch.tokens``
counts every token read; ``cached_tokens`` how many came from the cache; ``padding_fraction``
is over the positions computed in the call.

Results are returned in the caller's order whatever the batching.
"""
from __future__ import annotations

import gc
import hashlib
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .base import ScoreBatch

BATCHING = ("auto", "padded", "packed")


def plan_buckets(lengths: Sequence[int], max_batch: int, max_tokens: int | None = None) -> list[list[int]]:
    """Sort indices by length (stable) and cut the sorted order into consecutive buckets of
    at most ``max_batch`` sequences whose padded size (count x longest) stays within
    ``max_tokens`` (a single longer sequence still gets its own bucket)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = max([lengths[j] for j in cur] + [lengths[i]])
        if cur and (len(cur) >= max_batch or (max_tokens is not None and width * (len(cur) + 1) > max_tokens)):
            buckets.append(cur)
            cur = []
        cur.append(i)
    if cur:
        buckets.append(cur)
    return buckets


def padding_fraction(lengths: Sequence[int], buckets: Sequence[Sequence[int]]) -> float:
    """Padded positions / all positions computed when each bucket is padded to its longest."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in buckets if b)
    real = sum(lengths[i] for b in buckets for i in b)
    return (total - real) / total if total else 0.0


def plan_packs(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Consecutive packs (caller's order) of at most ``max_tokens`` tokens (a longer sequence
    gets a pack of its own)."""
    packs: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if cur and used + n > max_tokens:
            packs.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        packs.append(cur)
    return packs


def render_chat(tok: Any, messages: list[dict], *, add_generation_prompt: bool) -> str:
    """The tokenizer's chat template as text, or a plain fallback without one."""
    if getattr(tok, "chat_template", None):
        try:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception:
            # Some templates refuse a system role: fold it into the first user turn.
            if not messages or messages[0]["role"] != "system" or len(messages) < 2:
                raise
            system, first, rest = messages[0], messages[1], messages[2:]
            merged = {"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}
            return tok.apply_chat_template([merged, *rest], tokenize=False, add_generation_prompt=add_generation_prompt)
    parts = []
    for m in messages:
        role = {"system": "System", "user": "User", "assistant": "Assistant"}.get(m["role"], m["role"].title())
        parts.append(f"{role}: {m['content']}")
    text = "\n\n".join(parts)
    if add_generation_prompt:
        text += "\n\nAssistant:"
    return text


class HFRewardBase:
    """Common load / score / close for the transformers reward models (subclass hooks below)."""

    kind = "base"

    def __init__(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        max_batch: int = 16,
        max_tokens: int = 16384,
        batching: str = "auto",
        kernel_path: str | None = None,
        max_length: int | None = None,
        field: str = "--reward-model",
        prefix_cache: bool = True,
    ):
        if batching not in BATCHING:
            raise ConfigError("batching", batching, f"use one of {', '.join(BATCHING)}")
        if int(max_batch) < 1:
            raise ConfigError("max_batch", max_batch, "must be >= 1")
        if kernel_path not in (None, "triton", "triton-interpret", "reference"):
            raise ConfigError("kernel_path", kernel_path, "use None (auto), triton, triton-interpret or reference")
        self.model_ref = str(model)
        self.name = name or f"{self.kind}:{model}"
        self._device_name = device
        self._dtype_name = dtype
        self.trust_remote_code = trust_remote_code
        self.max_batch = int(max_batch)
        self.max_tokens = int(max_tokens)
        self.batching = batching
        self._kernel_pref = kernel_path
        self._max_length_arg = max_length
        self._field = field
        self._model = None
        self._body = None
        self._tok = None
        self._load_s: float | None = None
        self._last_path: str | None = None
        self.prefix_cache = bool(prefix_cache)
        self._prefix_ids: list[int] | None = None
        self._prefix_kv = None
        self._prefix_note = "off" if not prefix_cache else "not built"
        self.stats = {
            "calls": 0,
            "pairs": 0,
            "tokens": 0,
            "prefix_cached_tokens": 0,
            "positions_computed": 0,
            "truncated_pairs": 0,
        }

    # ---- subclass hooks -------------------------------------------------------------------
    def _auto_class(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _setup(self) -> None:
        """After the model is on its device: pick head weights, run the self-check."""

    def _messages(self, prompt: str, response: str) -> list[dict]:  # pragma: no cover
        raise NotImplementedError

    def _encode(self, prompt: str, response: str) -> list[int]:  # pragma: no cover
        raise NotImplementedError

    def _head(self, hidden, cu_seqlens, positions, path: str):  # pragma: no cover
        """``[T, H]`` hidden -> ``[B]`` fp32 rewards through a costtax.kernels op."""
        raise NotImplementedError

    def _shared_prefix_ids(self) -> list[int] | None:
        """Token ids every scored sequence starts with (e.g. a judge's instructions and
        examples), whose KV cache is computed once and reused; None for no shared prefix."""
        return None

    def _head_tensors(self) -> tuple:  # tensors the kernel reads besides hidden (for the path)
        return ()

    def _extra_provenance(self) -> dict:
        return {}

    # ---- loading -------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model_dir(self) -> Path:
        from ..models import EMBEDDED, resolve_model

        if self.model_ref in EMBEDDED:
            return resolve_model(self.model_ref)
        return Path(self.model_ref).expanduser()

    def _choose_attn(self, device: str) -> str:
        if device.startswith("cuda") and self.batching in ("auto", "packed"):
            try:
                from transformers.utils import is_flash_attn_2_available

                if is_flash_attn_2_available():
                    return "flash_attention_2"
            except Exception:
                pass
        return "sdpa"

    def load(self) -> float:
        if self._model is not None:
            return self._load_s or 0.0
        import torch
        from transformers import AutoTokenizer

        t0 = time.perf_counter()
        model_dir = self.model_dir()
        device = self._device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        if self._dtype_name:
            dtype = getattr(torch, self._dtype_name)
        elif device.startswith("cuda") and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        else:
            dtype = torch.float32  # no bf16 units on the AVX2 CPUs we run on
        tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=self.trust_remote_code)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        attn = self._choose_attn(device)
        model = self._auto_class().from_pretrained(
            str(model_dir), dtype=dtype, trust_remote_code=self.trust_remote_code, attn_implementation=attn
        )
        model.to(device)
        model.eval()
        body = getattr(model, "base_model", None)
        if body is None or body is model:
            raise ConfigError(
                self._field,
                self.name,
                f"{type(model).__name__} has no separate transformer body (base_model); not supported",
            )
        self._tok, self._model, self._body = tok, model, body
        self._device, self._dtype, self._attn = device, dtype, attn
        self._model_dir = model_dir
        if self.batching == "auto":
            self._mode = "packed" if (device.startswith("cuda") and attn == "flash_attention_2") else "padded"
        else:
            self._mode = self.batching
        limit = self._max_length_arg
        if limit is None:
            cfg_max = getattr(model.config, "max_position_embeddings", None) or 2048
            tok_max = getattr(tok, "model_max_length", None) or cfg_max
            limit = int(min(cfg_max, tok_max if tok_max < 10**7 else cfg_max))
        self.max_length = int(limit)
        try:
            self._setup()
            self._build_prefix_cache()
        except Exception:
            self.close()
            raise
        self._load_s = time.perf_counter() - t0
        return self._load_s

    def close(self) -> None:
        had_cuda = getattr(self, "_device", "cpu").startswith("cuda")
        self._model = self._body = None
        self._prefix_kv = None
        gc.collect()
        if had_cuda:
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception:
                pass

    def _build_prefix_cache(self) -> None:
        """KV cache of the shared prefix (padded batching only), checked once against a full
        forward; any failure leaves it off and says why in provenance."""
        self._prefix_kv, self._prefix_ids = None, None
        if not self.prefix_cache:
            self._prefix_note = "off"
            return
        if self._mode != "padded":
            self._prefix_note = "off: packed batching"
            return
        prefix = self._shared_prefix_ids()
        if not prefix or len(prefix) < 16:
            self._prefix_note = "off: no shared prefix"
            return
        import torch

        try:
            with torch.inference_mode():
                x = torch.tensor([prefix], device=self._device)
                out = self._body(input_ids=x, use_cache=True)
                kv = out.past_key_values
                if kv is None or not hasattr(kv, "batch_repeat_interleave"):
                    self._prefix_note = "off: the model returns no reusable cache"
                    return
                self._prefix_kv, self._prefix_ids = kv, list(prefix)
                # check: one probe pair, with and without the cache
                probe = self._encode("What is 2 + 2?", "4")
                if probe[: len(prefix)] != prefix:
                    raise RuntimeError("the probe pair does not start with the shared prefix")
                with_cache, _ = self._run_bucket([probe[len(prefix):]], len(prefix))
                without, _ = self._run_bucket([probe], 0)
        except Exception as e:  # never fatal: score without the cache
            self._prefix_kv, self._prefix_ids = None, None
            self._prefix_note = f"off: {type(e).__name__}: {e}"[:200]
            return
        tol = 1e-3 if self._dtype == torch.float32 else 5e-2
        if abs(with_cache[0] - without[0]) > tol * max(1.0, abs(without[0])):
            self._prefix_kv, self._prefix_ids = None, None
            self._prefix_note = f"off: cached {with_cache[0]:.5g} != uncached {without[0]:.5g}"
            return
        self._prefix_note = f"on: {len(prefix)} tokens"

    # ---- tokenising ----------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def _fit(self, prompt: str, response: str) -> tuple[list[int], bool]:
        """Token ids of a pair, shortening the response (then the prompt) from the end until
        the sequence fits ``max_length``. The template around them is never cut."""
        ids = self._encode(prompt, response)
        truncated = False
        for _ in range(8):
            over = len(ids) - self.max_length
            if over <= 0:
                return ids, truncated
            truncated = True
            r_ids = self._ids(response)
            if r_ids:
                keep = max(0, len(r_ids) - over - 2)
                response = self._tok.decode(r_ids[:keep])
            else:
                p_ids = self._ids(prompt)
                if not p_ids:
                    break
                prompt = self._tok.decode(p_ids[: max(0, len(p_ids) - over - 2)])
            ids = self._encode(prompt, response)
        if len(ids) > self.max_length:
            raise ConfigError(
                self._field, self.name, f"the scoring template alone is {len(ids)} tokens, over max_length={self.max_length}"
            )
        return ids, truncated

    # ---- scoring -------------------------------------------------------------------------
    def _path_for(self, hidden) -> str:
        from costtax.kernels._dispatch import choose_path, kernel_dtype_ok

        ts = (hidden, *self._head_tensors())
        return choose_path(self._kernel_pref, *ts, dtype_ok=kernel_dtype_ok(*ts))

    def _run_padded(self, seqs: list[list[int]], rewards: list[float]) -> tuple[float, list[int]]:
        """Right-padded length buckets. Sequences that start with the shared prefix (when its
        KV cache is on) run only their suffix on top of a copy of the prefix cache.
        Returns (padding fraction over computed positions, cached tokens per sequence)."""
        prefix = self._prefix_ids if self._prefix_kv is not None else None
        P = len(prefix) if prefix else 0
        cached = [0] * len(seqs)
        groups: list[tuple[list[int], int]] = []
        if P:
            hit = [i for i, s in enumerate(seqs) if len(s) > P and s[:P] == prefix]
            hit_set = set(hit)
            groups.append((hit, P))
            groups.append(([i for i in range(len(seqs)) if i not in hit_set], 0))
            for i in hit:
                cached[i] = P
        else:
            groups.append((list(range(len(seqs))), 0))
        computed = real = 0
        for indices, offset in groups:
            if not indices:
                continue
            sub = [seqs[i][offset:] for i in indices]
            lengths = [len(x) for x in sub]
            for bucket in plan_buckets(lengths, self.max_batch, self.max_tokens):
                vals, width = self._run_bucket([sub[j] for j in bucket], offset)
                for j, v in zip(bucket, vals):
                    rewards[indices[j]] = v
                computed += width * len(bucket)
                real += sum(lengths[j] for j in bucket)
        self.stats["positions_computed"] += computed
        return ((computed - real) / computed if computed else 0.0), cached

    def _run_bucket(self, seqs: list[list[int]], offset: int) -> tuple[list[float], int]:
        import copy

        import torch

        lengths = [len(s) for s in seqs]
        width, b = max(lengths), len(seqs)
        pad = self._tok.pad_token_id
        pad = 0 if pad is None else pad  # masked out: any id will do
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, offset + width), dtype=torch.long)
        mask[:, :offset] = 1
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, offset : offset + len(s)] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        if offset:
            cache = copy.deepcopy(self._prefix_kv)
            cache.batch_repeat_interleave(b)
            pos = (torch.arange(width, device=self._device) + offset).unsqueeze(0).expand(b, -1)
            out = self._body(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        else:
            out = self._body(input_ids=ids, attention_mask=mask, use_cache=False)
        hidden = out[0].reshape(b * width, -1)
        cu = torch.arange(b + 1, device=self._device, dtype=torch.int32) * width
        last = torch.tensor([n - 1 for n in lengths], device=self._device, dtype=torch.long)
        positions = torch.arange(b, device=self._device, dtype=torch.long) * width + last
        path = self._path_for(hidden)
        vals = self._head(hidden, cu, positions, path).float().cpu().tolist()
        self._last_path = path
        return vals, width

    def _run_packed(self, seqs: list[list[int]], rewards: list[float]) -> tuple[float, list[int]]:
        import torch

        lengths = [len(s) for s in seqs]
        for pack in plan_packs(lengths, self.max_tokens):
            flat = [t for i in pack for t in seqs[i]]
            pos = [p for i in pack for p in range(lengths[i])]
            ids = torch.tensor([flat], dtype=torch.long, device=self._device)
            position_ids = torch.tensor([pos], dtype=torch.long, device=self._device)
            out = self._body(input_ids=ids, position_ids=position_ids, attention_mask=None, use_cache=False)
            hidden = out[0][0]
            cu_list = [0]
            for i in pack:
                cu_list.append(cu_list[-1] + lengths[i])
            cu = torch.tensor(cu_list, dtype=torch.int32, device=self._device)
            path = self._path_for(hidden)
            vals = self._head(hidden, cu, None, path).float().cpu().tolist()
            self._last_path = path
            for i, v in zip(pack, vals):
                rewards[i] = v
            self.stats["positions_computed"] += len(flat)
        return 0.0, [0] * len(seqs)

    def encode_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        """Token ids the model reads for each pair (after truncation to max_length)."""
        self._require()
        out = []
        for p, r in zip(prompts, responses):
            ids, truncated = self._fit(str(p), str(r))
            self.stats["truncated_pairs"] += int(truncated)
            out.append(ids)
        return out

    def _require(self):
        if self._model is None:
            self.load()
        return self._model

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> ScoreBatch:
        import torch

        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"score(): {len(prompts)} prompts but {len(responses)} responses")
        self._require()
        t0 = time.perf_counter()
        seqs = self.encode_pairs(prompts, responses)
        rewards: list[float] = [float("nan")] * len(seqs)
        pad_frac, cached = 0.0, [0] * len(seqs)
        if seqs:
            with torch.inference_mode():
                if self._mode == "packed":
                    pad_frac, cached = self._run_packed(seqs, rewards)
                else:
                    pad_frac, cached = self._run_padded(seqs, rewards)
            if self._device.startswith("cuda"):
                torch.cuda.synchronize()
        path = self._last_path or self._default_path()
        latency = time.perf_counter() - t0
        self.stats["calls"] += 1
        self.stats["pairs"] += len(seqs)
        self.stats["tokens"] += sum(len(s) for s in seqs)
        self.stats["prefix_cached_tokens"] += sum(cached)
        return ScoreBatch(
            rewards=tuple(float(x) for x in rewards),
            tokens=tuple(len(s) for s in seqs),
            padding_fraction=float(pad_frac),
            path=path,
            latency_s=latency,
            cached_tokens=tuple(cached),
        )

    def _default_path(self) -> str:
        import torch

        return self._path_for(torch.empty((1, 1), device=self._device, dtype=self._dtype))

    # ---- provenance ----------------------------------------------------------------------
    def provenance(self) -> dict:
        info: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "model": self.model_ref,
            "batching": self.batching,
            "max_batch": self.max_batch,
            "max_tokens": self.max_tokens,
            "loaded": self.loaded,
            "stats": dict(self.stats),
        }
        if self._model is not None:
            cfg = self._model.config
            info.update(
                {
                    "model_dir": str(self._model_dir),
                    "architecture": type(self._model).__name__,
                    "n_params": int(sum(p.numel() for p in self._model.parameters())),
                    "device": str(self._device),
                    "dtype": str(self._dtype).replace("torch.", ""),
                    "attn_implementation": self._attn,
                    "batching_mode": self._mode,
                    "prefix_cache": self._prefix_note,
                    "max_length": self.max_length,
                    "hidden_size": getattr(cfg, "hidden_size", None),
                    "kernel_path": self._last_path or self._default_path(),
                    "load_s": self._load_s,
                }
            )
            src = Path(self._model_dir) / "costtax_source.txt"
            if src.is_file():
                info["model_source"] = src.read_text().strip()
        info.update(self._extra_provenance())
        return info


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
