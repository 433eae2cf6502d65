"""Shared machinery for transformers-based reward models: load, tokenise, the scoring loop.

A reward model here is a transformer *body* (embeddings ... final norm) followed by a head
that is read at one row per sequence. We never run the model's own head over every position:
the body's last hidden states go to a ``costtax.kernels`` op (``reward_head`` for a scalar
head, ``judge_head`` for k rows of an LM head) which reads only the score rows.

One job per module: which sequences run together (padded buckets, packs, best-of-N groups) is
planned in batch_plans.py; the shared-prefix KV caches (the judge's instructions, a group's
common prefix) are built, checked and run in prefix_cache.py; this module loads the model,
chooses the attention implementation and kernel path, and holds the one scoring loop
(``HFRewardBase.score``). Results are returned in the caller's order whatever the batching.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any, Sequence

from ..devices import pick_device_dtype
from ..errors import ConfigError
from .attention_paths import attn_implementation, head_kernel_path
from .base import ScoreBatch
from .batch_plans import plan_buckets, plan_groups, plan_packs
from .prefix_cache import SharedPrefixMixin

BATCHING = ("auto", "padded", "packed")


class HFRewardBase(SharedPrefixMixin):
    """Common load / score / close for the transformers reward models (subclass hooks below)."""

    kind = "base"
    # a group prefix is worth its own forward only with this many new shared tokens
    GROUP_MIN_SHARED = 8
    # set by rewards/progress.batch_progress: called with the pairs each batch scored
    on_batch_scored = None

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
        group_prefix: bool = True,
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
        self.group_prefix = bool(group_prefix) and self.prefix_cache
        self._group_mode: str | None = None  # "cascade" | "expand" | None (off)
        self._group_note = "off" if not self.group_prefix else "not checked"
        self.stats = {
            "calls": 0,
            "pairs": 0,
            "tokens": 0,
            "prefix_cached_tokens": 0,
            "computed_tokens": 0,
            "group_pairs": 0,
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
        from ..model_files import EMBEDDED, resolve_model

        if self.model_ref in EMBEDDED:
            return resolve_model(self.model_ref)
        return Path(self.model_ref).expanduser()

    def load(self) -> float:
        if self._model is not None:
            return self._load_s or 0.0
        from transformers import AutoTokenizer

        t0 = time.perf_counter()
        model_dir = self.model_dir()
        device, dtype = pick_device_dtype(self._device_name, self._dtype_name)
        tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=self.trust_remote_code)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        attn = attn_implementation(device, self.batching)
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
            self._check_group_prefix()
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
        return head_kernel_path(self._kernel_pref, hidden, self._head_tensors())

    def _run_padded(self, seqs: list[list[int]], rewards: list[float]) -> tuple[int, int, list[int]]:
        """Right-padded length buckets. Sequences that start with the shared prefix (when its
        KV cache is on) run only their suffix on top of a copy of the prefix cache.
        Returns (positions computed, real tokens computed, cached tokens per sequence)."""
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
        return computed, real, cached

    def _run_bucket(self, seqs: list[list[int]], offset: int, prefix: Any = None) -> tuple[list[float], int]:
        """Score right-padded ``seqs`` that continue after ``offset`` prefix tokens. ``prefix``:
        a batch-1 transformers cache (copied and repeated per sequence, with a padding mask),
        a ``PrefixKV`` (cascade attention over one copy, no mask), or None: the judge's
        instruction cache when ``offset`` > 0. Returns (rewards, padded width)."""
        import copy

        import torch

        lengths = [len(s) for s in seqs]
        width, b = max(lengths), len(seqs)
        pad = self._tok.pad_token_id
        pad = 0 if pad is None else pad  # masked out (or causally unseen): any id will do
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, offset + width), dtype=torch.long)
        mask[:, :offset] = 1
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, offset : offset + len(s)] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        if offset:
            from costtax.kernels.prefix_attention import PrefixKV

            pos = (torch.arange(width, device=self._device) + offset).unsqueeze(0).expand(b, -1)
            if isinstance(prefix, PrefixKV):
                # Right padding needs no mask under the causal rule; transformers builds none
                # for an attention implementation without a registered mask function.
                with self._attention("costtax_prefix"):
                    out = self._body(
                        input_ids=ids, attention_mask=None, position_ids=pos, use_cache=False, costtax_prefix=prefix
                    )
            else:
                cache = copy.deepcopy(self._prefix_kv if prefix is None else prefix)
                cache.batch_repeat_interleave(b)
                out = self._body(
                    input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
                )
        else:
            out = self._body(input_ids=ids, attention_mask=mask, use_cache=False)
        hidden = out[0].reshape(b * width, -1)
        cu = torch.arange(b + 1, device=self._device, dtype=torch.int32) * width
        last = torch.tensor([n - 1 for n in lengths], device=self._device, dtype=torch.long)
        positions = torch.arange(b, device=self._device, dtype=torch.long) * width + last
        path = self._path_for(hidden)
        vals = self._head(hidden, cu, positions, path).float().cpu().tolist()
        self._last_path = path
        if self.on_batch_scored is not None:  # progress display (rewards/progress.py)
            self.on_batch_scored(len(seqs))
        return vals, width

    def _run_packed(self, seqs: list[list[int]], rewards: list[float]) -> tuple[int, int, list[int]]:
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
            if self.on_batch_scored is not None:
                self.on_batch_scored(len(pack))
            self.stats["positions_computed"] += len(flat)
        return sum(lengths), sum(lengths), [0] * len(seqs)

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

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], *, harmful: Sequence[bool] | None = None
    ) -> ScoreBatch:
        """Rewards for the pairs; ``harmful`` is ignored here (the judge subclass applies its rule)."""
        import torch

        prompts, responses = [str(p) for p in prompts], list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"score(): {len(prompts)} prompts but {len(responses)} responses")
        self._require()
        t0 = time.perf_counter()
        seqs = self.encode_pairs(prompts, responses)
        n = len(seqs)
        rewards: list[float] = [float("nan")] * n
        computed_tok = [len(s) for s in seqs]
        group_len = [0] * n
        positions = real = 0
        if seqs:
            groups = []
            if self._group_mode is not None:
                base = len(self._prefix_ids) if self._prefix_kv is not None else 0
                groups = plan_groups(
                    prompts, seqs, min_shared=self.GROUP_MIN_SHARED, base=base, base_ids=self._prefix_ids
                )
            grouped = {i for idx, _, _ in groups for i in idx}
            rest = [i for i in range(n) if i not in grouped]
            with torch.inference_mode():
                for idx, L, start in groups:
                    got = [float("nan")] * len(idx)
                    c, r = self._run_group([seqs[i] for i in idx], L, start, got, self._group_mode)
                    positions, real = positions + c, real + r
                    # the prefix tokens computed (L - start) are split evenly over the group
                    share, extra = divmod(L - start, len(idx))
                    for j, i in enumerate(idx):
                        rewards[i] = got[j]
                        group_len[i] = L
                        computed_tok[i] = len(seqs[i]) - L + share + (1 if j < extra else 0)
                if rest:
                    sub_rewards = [float("nan")] * len(rest)
                    run = self._run_packed if self._mode == "packed" else self._run_padded
                    c, r, sub_cached = run([seqs[i] for i in rest], sub_rewards)
                    positions, real = positions + c, real + r
                    for i, v, k in zip(rest, sub_rewards, sub_cached):
                        rewards[i] = v
                        computed_tok[i] = len(seqs[i]) - k
            if self._device.startswith("cuda"):
                torch.cuda.synchronize()
        path = self._last_path or self._default_path()
        latency = time.perf_counter() - t0
        cached = [len(s) - c for s, c in zip(seqs, computed_tok)]
        self.stats["calls"] += 1
        self.stats["pairs"] += n
        self.stats["tokens"] += sum(len(s) for s in seqs)
        self.stats["prefix_cached_tokens"] += sum(cached)
        self.stats["computed_tokens"] += sum(computed_tok)
        self.stats["group_pairs"] += sum(1 for x in group_len if x)
        return ScoreBatch(
            rewards=tuple(float(x) for x in rewards),
            tokens=tuple(len(s) for s in seqs),
            padding_fraction=float((positions - real) / positions) if positions else 0.0,
            path=path,
            latency_s=latency,
            cached_tokens=tuple(cached),
            computed_tokens=tuple(computed_tok),
            group_prefix_tokens=tuple(group_len),
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
                    "group_prefix": self._group_note,
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
