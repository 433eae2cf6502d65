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

Group-shared prefix (``group_prefix=True``, needs ``prefix_cache=True``; either batching):
the pairs of one ``score()`` call that have the same prompt (a best-of-N group) share the
longest common *token* prefix of their encoded sequences (the judge's instructions and the
rendered user turn up to the response, or a scalar RM's rendered prompt; computed on token
ids, because a chat template or a BPE merge can move the split away from the text boundary;
capped so each pair keeps at least its last token). That prefix runs once, batch 1 (on top
of the judge's instruction cache when it starts with it); then the N suffixes run in
right-padded buckets attending to it:

* ``"cascade"``: through ``costtax.kernels.prefix_attention`` plugged into transformers'
  ``AttentionInterface`` (``attn_implementation="costtax_prefix"`` while the suffixes run):
  ONE copy of the prefix KV, prefix part and own part merged by log-sum-exp (Triton on CUDA,
  the torch reference on CPU);
* ``"expand"`` (fallback when the model cannot switch its attention): a copy of the prefix
  cache repeated per sequence, with the usual padding mask.

A load-time probe scores one small group both ways against full scoring and picks the first
mode that matches (provenance ``group_prefix`` says which, or why it is off). Pairs without a
group (a prompt seen once, or fewer than ``GROUP_MIN_SHARED`` new shared tokens) are scored
as before. ``ScoreBatch.computed_tokens`` counts each pair's suffix plus an even share of its
group prefix; ``cached_tokens`` = ``tokens - computed_tokens`` (read from a reused KV).

Results are returned in the caller's order whatever the batching.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import time
from pathlib import Path
from typing import Any, Sequence

from ..devices import pick_device_dtype, self_check_tol
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


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token sequences (0 for none or no sequences)."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(x) for x in seqs)
    for j in range(n):
        t = first[j]
        if any(x[j] != t for x in seqs):
            return j
    return n


def plan_groups(
    prompts: Sequence[str], seqs: Sequence[Sequence[int]], *, min_shared: int = 1, base: int = 0,
    base_ids: Sequence[int] | None = None,
) -> list[tuple[list[int], int, int]]:
    """Best-of-N groups to score over a shared prefix: ``(indices, L, start)`` per group of
    at least two pairs with the same prompt text, where ``L`` is the longest common token
    prefix of their sequences, capped at the shortest length minus 1 (every pair keeps its
    score row), and ``start`` is ``base`` when the sequences begin with ``base_ids`` (a KV cache
    of those ``base`` tokens exists already) else 0. Groups with fewer than ``min_shared``
    tokens to compute in the prefix (``L - start``) are left out: they score in full."""
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    out = []
    for idx in by_prompt.values():
        if len(idx) < 2:
            continue
        group = [seqs[i] for i in idx]
        L = min(common_prefix_len(group), min(len(x) for x in group) - 1)
        start = base if (base and base_ids is not None and L >= base and list(group[0][:base]) == list(base_ids)) else 0
        if L - start >= max(1, min_shared):
            out.append((list(idx), L, start))
    return out


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
    # a group prefix is worth its own forward only with this many new shared tokens
    GROUP_MIN_SHARED = 8
    # set by costtax.rewards.progress.batch_progress: called with the pairs each batch scored
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
        from transformers import AutoTokenizer

        t0 = time.perf_counter()
        model_dir = self.model_dir()
        device, dtype = pick_device_dtype(self._device_name, self._dtype_name)
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
        tol = self_check_tol(self._dtype)
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
                if self.on_batch_scored is not None:
                    self.on_batch_scored(len(bucket))
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
        return vals, width

    @contextlib.contextmanager
    def _attention(self, name: str):
        """Switch the model's attention implementation for the duration (transformers reads
        ``config._attn_implementation`` at every forward); refuse if the model cannot."""
        from costtax.kernels.prefix_attention import register_hf_attention

        register_hf_attention()
        prev = self._model.config._attn_implementation
        self._model.set_attn_implementation(name)
        try:
            if self._model.config._attn_implementation != name:
                raise RuntimeError(f"{type(self._model).__name__} cannot switch its attention implementation")
            yield
        finally:
            if self._model.config._attn_implementation != prev:
                self._model.set_attn_implementation(prev)

    def _group_prefix_kv(self, ids: list[int], start: int):
        """Batch-1 KV cache of ``ids`` (the group's shared prefix), computed on top of a copy
        of the judge's instruction cache when ``start`` > 0 (its first ``start`` tokens)."""
        import copy

        import torch

        x = torch.tensor([ids[start:]], dtype=torch.long, device=self._device)
        if start:
            cache = copy.deepcopy(self._prefix_kv)
            pos = torch.arange(start, len(ids), device=self._device).unsqueeze(0)
            self._body(input_ids=x, position_ids=pos, past_key_values=cache, use_cache=True)
            return cache
        kv = self._body(input_ids=x, use_cache=True).past_key_values
        if kv is None:
            raise RuntimeError("the model returns no reusable cache")
        return kv

    def _run_group(
        self, seqs: list[list[int]], L: int, start: int, rewards: list[float], mode: str, attn_path: str | None = None
    ) -> tuple[int, int]:
        """Score one group whose sequences share their first ``L`` tokens (of which the first
        ``start`` are in the instruction cache): the prefix once, then the suffixes over it.
        Fills ``rewards`` (group order); returns (positions computed, real tokens computed).
        ``attn_path``: the prefix attention's kernel path (default: as the heads')."""
        from costtax.kernels.prefix_attention import PrefixKV

        cache = self._group_prefix_kv(seqs[0][:L], start)
        path = attn_path or self._attn_path()
        prefix = PrefixKV.from_cache(cache, path=path) if mode == "cascade" else cache
        sub = [s[L:] for s in seqs]
        lengths = [len(x) for x in sub]
        computed = real = L - start
        for bucket in plan_buckets(lengths, self.max_batch, self.max_tokens):
            vals, width = self._run_bucket([sub[j] for j in bucket], L, prefix)
            if self.on_batch_scored is not None:
                self.on_batch_scored(len(bucket))
            for j, v in zip(bucket, vals):
                rewards[j] = v
            computed += width * len(bucket)
            real += sum(lengths[j] for j in bucket)
        self.stats["positions_computed"] += computed
        return computed, real

    def _attn_path(self) -> str | None:
        """Kernel path of the prefix attention inside the model's forward pass. The Triton
        interpreter (tests on a CPU) is for checking kernels (tests/kernels does, on small
        shapes); a model forward through it costs ~2 ms per program x heads x layers, minutes
        per group, so there the torch reference runs instead. CUDA: the compiled kernel."""
        if self._kernel_pref is not None:
            return self._kernel_pref
        import torch

        from costtax.kernels._dispatch import kernel_path

        return "reference" if kernel_path(torch.empty(0, device=self._device)) == "triton-interpret" else None

    def _check_group_prefix(self) -> None:
        """Probe one small best-of-N group: group-prefix scoring must match full scoring.
        Picks "cascade", else "expand"; any failure leaves it off and says why."""
        import torch

        self._group_mode = None
        if not self.group_prefix:
            self._group_note = "off"
            return
        prompt = "What is 12 + 7? Answer with just the number, then say why in one short sentence."
        responses = ["19", "The answer is 19, because 12 + 7 = 19."]
        tol = self_check_tol(self._dtype)
        # The probe checks the integration, not the kernel (tests/kernels does): under the
        # Triton interpreter (tests on CPU) it runs the torch reference, which takes
        # milliseconds instead of seconds; compiled Triton on CUDA probes the kernel itself.
        probe_path = self._attn_path()
        why = []
        try:
            with torch.inference_mode():
                seqs = [self._encode(prompt, r) for r in responses]
                full = [self._run_bucket([s], 0)[0][0] for s in seqs]
                base = len(self._prefix_ids) if self._prefix_kv is not None else 0
                plan = plan_groups([prompt] * len(seqs), seqs, base=base, base_ids=self._prefix_ids)
                if not plan:
                    self._group_note = "off: the probe pairs share no prefix"
                    return
                _, L, start = plan[0]
                for mode in ("cascade", "expand"):
                    got = [float("nan")] * len(seqs)
                    try:
                        self._run_group(seqs, L, start, got, mode, attn_path=probe_path)
                    except Exception as e:
                        why.append(f"{mode}: {type(e).__name__}: {e}"[:160])
                        continue
                    err = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(got, full))
                    if err <= tol:
                        self._group_mode = mode
                        self._group_note = f"on: {mode}"
                        return
                    why.append(f"{mode}: group {got[1]:.5g} != full {full[1]:.5g}")
        except Exception as e:  # never fatal: score without group prefixes
            why.append(f"{type(e).__name__}: {e}"[:160])
        self._group_note = ("off: " + "; ".join(why))[:300]

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

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> ScoreBatch:
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


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
