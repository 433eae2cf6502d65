"""gpu_check, transformers jobs (random weights, no downloads):

* :func:`hf_scoring`: a tiny random Llama; a padded HF scoring pass (full-vocabulary logits;
  ``LlamaForSequenceClassification``'s head on every position) against the same backbone
  followed by the kernels;
* :func:`hf_engine`: costtax's own HF engine on a tiny random model from ``costtax.tiny``:
  the same batch generated several times, so a cold first call (issue 9: 3.74 s, then
  0.16-0.17 s on the H200) shows up next to the steady state.

Both return a record and never raise: errors are recorded.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import traceback
from typing import Any

import torch

from costtax import kernels as K


def hf_scoring(device: torch.device, dry: bool, clock) -> dict:
    res: dict[str, Any] = {}
    try:
        from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

        dtype = torch.float32 if dry else torch.bfloat16
        cfg = dict(
            hidden_size=64 if dry else 1024, intermediate_size=128 if dry else 2816,
            num_hidden_layers=1 if dry else 4, num_attention_heads=4 if dry else 16,
            num_key_value_heads=4 if dry else 16, vocab_size=1000 if dry else 128256,
            max_position_embeddings=4096, pad_token_id=0,
        )
        B, lo, hi = (4, 3, 16) if dry else (32, 64, 512)
        torch.manual_seed(0)
        config = LlamaConfig(**cfg)
        config.num_labels = 1
        lm = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
        cls = LlamaForSequenceClassification(config).to(device=device, dtype=dtype).eval()
        cls.model = lm.model  # same backbone for both heads
        gen = torch.Generator().manual_seed(0)
        lengths = torch.randint(lo, hi + 1, (B,), generator=gen)
        L = int(lengths.max())
        ids = torch.randint(1, cfg["vocab_size"], (B, L), generator=gen)
        mask = torch.arange(L)[None, :] < lengths[:, None]
        ids = torch.where(mask, ids, torch.zeros_like(ids)).to(device)  # right padding
        mask = mask.to(device=device, dtype=torch.long)
        last = (torch.arange(B) * L + lengths - 1).to(device)  # rows of the flattened [B*L, H]
        cu = (torch.arange(B + 1, dtype=torch.int32) * L).to(device)
        tok = torch.tensor([11, 22], device=device)
        res.update({"config": cfg, "B": B, "padded_len": L, "tokens": int(lengths.sum()), "dtype": str(dtype)})

        @torch.no_grad()
        def hf_judge():
            logits = lm(input_ids=ids, attention_mask=mask).logits  # [B, L, V]
            return logits.reshape(B * L, -1)[last][:, tok].float()

        @torch.no_grad()
        def kernel_judge():
            h = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state.reshape(B * L, -1)
            return K.judge_head(h, cu, lm.lm_head.weight, tok, positions=last, validate=False).logits

        @torch.no_grad()
        def hf_reward():
            return cls(input_ids=ids, attention_mask=mask).logits[:, 0].float()  # head at every position

        @torch.no_grad()
        def kernel_reward():
            h = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state.reshape(B * L, -1)
            return K.reward_head(h, cu, cls.score.weight, positions=last, validate=False)

        @torch.no_grad()
        def backbone_only():
            return lm.model(input_ids=ids, attention_mask=mask).last_hidden_state

        res["judge_logits_max_abs_err"] = float((hf_judge() - kernel_judge()).abs().max())
        res["reward_max_abs_err"] = float((hf_reward() - kernel_reward()).abs().max())
        tol = 1e-3 if dry else 0.1  # bf16 logits vs fp32-accumulated kernel
        res["agree"] = res["judge_logits_max_abs_err"] <= tol and res["reward_max_abs_err"] <= tol
        t = {name: clock.gpu_us(fn) for name, fn in
             (("hf_padded_full_vocab_logits", hf_judge), ("backbone_plus_judge_kernel", kernel_judge),
              ("hf_seqcls_padded", hf_reward), ("backbone_plus_reward_kernel", kernel_reward),
              ("backbone_only", backbone_only))}
        res["timings_us"] = {k: round(v, 1) for k, v in t.items()}
        res["judge_speedup_end_to_end"] = t["hf_padded_full_vocab_logits"] / t["backbone_plus_judge_kernel"]
        res["reward_speedup_end_to_end"] = t["hf_seqcls_padded"] / t["backbone_plus_reward_kernel"]
        res["note"] = ("both paths run the same padded backbone; the kernels replace the full-vocabulary "
                       "lm_head / per-position score head")
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc(limit=4)
    return res


def hf_engine(device: torch.device, dry: bool) -> dict:
    """Build a tiny random model with costtax.tiny and time costtax's HF engine on one batch,
    several times (the first call is the cold one)."""
    res: dict[str, Any] = {}
    try:
        from costtax.engines import GenRequest, SamplingSpec, make_engine
        from costtax.tiny import build_tiny_llama

        batch, max_tokens, calls = (4, 4, 2) if dry else (16, 32, 4)
        with tempfile.TemporaryDirectory(prefix="ct-gpucheck-") as tmp:
            t0 = time.monotonic()
            model_dir = build_tiny_llama(f"{tmp}/lm")
            res["build_s"] = round(time.monotonic() - t0, 3)
            eng = make_engine("hf", str(model_dir), max_batch=batch, device=device.type)
            try:
                res["start_s"] = round(eng.start(), 3)
                reqs = [GenRequest(f"r{i}", ({"role": "user", "content": f"Question {i}: what is {i} + 7?"},))
                        for i in range(batch)]
                spec = SamplingSpec(temperature=0.7, max_tokens=max_tokens, ignore_eos=True)
                walls = []
                for _ in range(calls):
                    t = time.perf_counter()
                    out = eng.generate(reqs, spec)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    walls.append(time.perf_counter() - t)
                res["tokens_per_call"] = sum(len(s.token_ids) for r in out for s in r.samples)
            finally:
                eng.close()
        rest = walls[1:]
        res.update({
            "batch": batch, "max_tokens": max_tokens, "call_wall_s": [round(w, 4) for w in walls],
            "first_over_median_rest": round(walls[0] / statistics.median(rest), 2) if rest else None,
        })
        res["cold_first_call"] = bool(rest) and walls[0] > 3 * statistics.median(rest)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc(limit=4)
    return res
