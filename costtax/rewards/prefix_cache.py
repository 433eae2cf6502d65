"""The shared-prefix KV caches of the transformers reward models (a mixin of HFRewardBase in
_hf.py): built and checked at load, reused by the scoring loop.

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
"""
from __future__ import annotations

import contextlib

from ..devices import self_check_tol
from .attention_paths import prefix_attention_path
from .batch_plans import plan_buckets, plan_groups


class SharedPrefixMixin:
    """Prefix-cache state and methods; needs HFRewardBase's ``_body``, ``_model``, ``_device``,
    ``_dtype``, ``_encode``, ``_run_bucket``, ``_kernel_pref``, ``max_batch``, ``max_tokens``,
    ``stats``."""

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
            for j, v in zip(bucket, vals):
                rewards[j] = v
            computed += width * len(bucket)
            real += sum(lengths[j] for j in bucket)
        self.stats["positions_computed"] += computed
        return computed, real

    def _attn_path(self) -> str | None:
        return prefix_attention_path(self._kernel_pref, self._device)

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
