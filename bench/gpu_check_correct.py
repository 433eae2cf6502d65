"""gpu_check, correctness job: each kernel against its torch reference, and the reference
against an independent naive computation (head on every position then gather; full-vocabulary
logits then pick columns; a Python loop over groups), on fresh random data: several seeds,
fp32 and bf16, odd shapes (B=1, length-1 sequences, H not a multiple of the tile, 1-element
and ragged groups). Every public path is checked: the auto path (which on CUDA may dispatch to
torch by the crossover table), the forced kernel, and judge_head's split-K variant.
"""

from __future__ import annotations

import math
import zlib

import torch

from costtax import kernels as K

TOL = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (2e-3, 2e-3)}
# The crossover's torch expression rounds a bf16 score to bf16 (documented in reward_head).
TOL_AUTO_BF16 = (8e-3, 2**-8)


def err_stats(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> dict:
    a, e = actual.double().cpu(), expected.double().cpu()
    if a.shape != e.shape:
        return {"max_abs_err": math.inf, "max_rel_err": math.inf, "passed": False,
                "error": f"shape {tuple(a.shape)} vs {tuple(e.shape)}"}
    if a.numel() == 0:
        return {"max_abs_err": 0.0, "max_rel_err": 0.0, "passed": True, "nan": 0}
    nan = int(torch.isnan(a).sum()) + int(torch.isnan(e).sum())
    diff = (a - e).abs()
    rel = diff / e.abs().clamp_min(1e-6)
    ok = bool((diff <= atol + rtol * e.abs()).all()) and nan == 0
    return {"max_abs_err": float(diff.max()), "max_rel_err": float(rel.max()), "passed": ok, "nan": nan}


def _lengths(spec, gen: torch.Generator) -> list[int]:
    if isinstance(spec, str):  # "rand:B:lo:hi"
        _, B, lo, hi = spec.split(":")
        return torch.randint(int(lo), int(hi) + 1, (int(B),), generator=gen).tolist()
    return spec


def _packed(gen, lengths, H, dtype, device):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    hidden = torch.randn(int(cu[-1]), H, generator=gen).to(device=device, dtype=dtype)
    return hidden, cu.to(device)


def _seeds(dry: bool) -> list[int]:
    return [0, 1] if dry else [0, 1, 2]


def _finish(rec: dict) -> dict:
    flags = [v["passed"] for v in rec.values() if isinstance(v, dict) and "passed" in v]
    flags += [v for k, v in rec.items() if k.startswith("argmax_")]
    rec["passed"] = bool(flags) and all(flags)
    return rec


def _kernel_paths(device) -> list[str | None]:
    """None (auto) always; the forced kernel where one exists for these tensors."""
    p = K.kernel_path(torch.empty(0, device=device))
    return [None] if p == "reference" else [None, p]


def check_reward_head(device: torch.device, dry: bool) -> list[dict]:
    if dry:
        cases = [("B1_len1", [1], 33), ("ragged", [3, 1, 17, 5], 101)]
    else:
        cases = [("B1_len1", [1], 33), ("B7_odd", [1, 17, 300, 5, 2, 99, 64], 96 + 5),
                 ("B64_576", "rand:64:1:700", 576), ("B300_4096p5", "rand:300:1:200", 4096 + 5)]
    out = []
    for seed in _seeds(dry):
        for dtype in (torch.float32, torch.bfloat16):
            for name, spec, H in cases:
                gen = torch.Generator().manual_seed(1000 * seed + zlib.crc32(name.encode()) % 997)
                lengths = _lengths(spec, gen)
                hidden, cu = _packed(gen, lengths, H, dtype, device)
                w = (torch.randn(H, generator=gen) / H**0.5).to(device=device, dtype=dtype)
                bias = [None, 0.25, torch.tensor(-0.5, device=device)][seed % 3]
                pos = torch.randint(0, hidden.shape[0], (len(lengths),), generator=gen).to(device) if seed == 1 else None
                ref = K.reward_head(hidden, cu, w, bias, positions=pos, path="reference")
                rows = pos.long() if pos is not None else cu[1:].long() - 1
                naive = (hidden.float() @ w.float())[rows] + (0.0 if bias is None else float(bias))
                atol, rtol = TOL[dtype]
                for path in _kernel_paths(device):
                    got = K.reward_head(hidden, cu, w, bias, positions=pos, path=path)
                    a, r = TOL_AUTO_BF16 if (path is None and dtype == torch.bfloat16) else (atol, rtol)
                    out.append(_finish({
                        "op": "reward_head", "case": name, "path": path or "auto", "dtype": str(dtype)[6:],
                        "seed": seed, "B": len(lengths), "T": hidden.shape[0], "H": H, "positions": pos is not None,
                        "bias": type(bias).__name__,
                        "kernel_vs_reference": err_stats(got, ref, a, r),
                        "reference_vs_naive": err_stats(ref, naive, atol, rtol)}))
    return out


def check_judge_head(device: torch.device, dry: bool) -> list[dict]:
    if dry:
        cases = [("B1_len1", [1], 33, 97), ("ragged", [3, 1, 9], 101, 211)]
    else:
        cases = [("B1_len1", [1], 33, 1000), ("B7_odd", [1, 17, 300, 5, 2, 99, 64], 2048 + 3, 32000),
                 ("B64_4096", "rand:64:1:500", 4096, 128256)]
    out = []
    for seed in _seeds(dry):
        for dtype in (torch.float32, torch.bfloat16):
            atol, rtol = TOL[dtype]
            for name, spec, H, V in cases:
                gen = torch.Generator().manual_seed(2000 * seed + zlib.crc32(name.encode()) % 997)
                lengths = _lengths(spec, gen)
                hidden, cu = _packed(gen, lengths, H, dtype, device)
                # The LM head is drawn on the device (128256 x 4096 on the host: seconds a draw).
                g = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
                lm = (torch.randn(V, H, generator=g, device=device) / H**0.5).to(dtype)
                for mode, k in (("diff", 2), ("logsoftmax", 5)):
                    tok = torch.randperm(V, generator=gen)[:k].to(device)
                    ref = K.judge_head(hidden, cu, lm, tok, mode=mode, path="reference")
                    full = hidden[cu[1:].long() - 1].float() @ lm.float().T  # full-vocabulary logits
                    nl = full[:, tok]
                    nr = nl[:, 0] - nl[:, 1] if mode == "diff" else torch.log_softmax(nl, -1)[:, 0]
                    for path in _kernel_paths(device):
                        for split in ((None,) if path is None else (None, 1, 3)):
                            got = K.judge_head(hidden, cu, lm, tok, mode=mode, path=path, split_h=split)
                            out.append(_finish({
                                "op": "judge_head", "case": name, "path": path or "auto", "split_h": split,
                                "dtype": str(dtype)[6:], "seed": seed, "mode": mode, "k": k, "B": len(lengths),
                                "T": hidden.shape[0], "H": H, "V": V,
                                "kernel_vs_reference": err_stats(got.logits, ref.logits, atol, rtol),
                                "kernel_vs_reference_reward": err_stats(got.reward, ref.reward, atol, rtol),
                                "reference_vs_naive": err_stats(ref.logits, nl, atol, rtol),
                                "reference_vs_naive_reward": err_stats(ref.reward, nr, atol, rtol)}))
    return out


def check_group_select(device: torch.device, dry: bool) -> list[dict]:
    if dry:
        cases = [("G1_N1", [1]), ("ragged", [3, 1, 70, 2])]
    else:
        cases = [("G1_N1", [1]), ("N1_groups", [1] * 37), ("ragged", "rand:200:1:40"), ("long", [1000, 3, 257, 1, 4096])]
    out = []
    for seed in _seeds(dry):
        for dtype in (torch.float32, torch.bfloat16):
            for name, spec in cases:
                gen = torch.Generator().manual_seed(3000 * seed + zlib.crc32(name.encode()) % 997)
                sizes = _lengths(spec, gen)
                offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64)
                offsets[1:] = torch.tensor(sizes).cumsum(0)
                M = int(offsets[-1])
                r = torch.randn(M, generator=gen)
                if seed == 2 or dry:  # ties and constant stretches
                    r = torch.randint(-3, 4, (M,), generator=gen).float()
                r, offsets = r.to(device=device, dtype=dtype), offsets.to(device)
                temp = [1.0, 0.5, 2.0][seed % 3]
                ref = K.group_select(r, offsets, temp, path="reference")
                nm, na, nz, ns = [], [], [], []
                offs = offsets.tolist()
                for g in range(len(sizes)):
                    x = r[offs[g]:offs[g + 1]].double()
                    vals = x.tolist()
                    nm.append(max(vals))
                    na.append(vals.index(max(vals)))
                    nz.append(torch.zeros_like(x) if min(vals) == max(vals) else (x - x.mean()) / x.std(unbiased=False))
                    ns.append(torch.softmax(x / temp, 0))
                naive = torch.cat([torch.tensor(nm, dtype=torch.float64), torch.cat(nz).cpu(), torch.cat(ns).cpu()])
                for path in _kernel_paths(device):
                    got = K.group_select(r, offsets, temp, path=path)
                    out.append(_finish({
                        "op": "group_select", "case": name, "path": path or "auto", "dtype": str(dtype)[6:],
                        "seed": seed, "G": len(sizes), "M": M, "temperature": temp,
                        "kernel_vs_reference": err_stats(torch.cat([got.max, got.zscore, got.softmax]),
                                                         torch.cat([ref.max, ref.zscore, ref.softmax]), 1e-5, 1e-4),
                        "argmax_kernel_eq_reference": bool(torch.equal(got.argmax.cpu(), ref.argmax.cpu())),
                        "reference_vs_naive": err_stats(torch.cat([ref.max, ref.zscore, ref.softmax]), naive, 1e-5, 1e-4),
                        "argmax_reference_eq_naive": ref.argmax.cpu().tolist() == na}))
    return out


CHECKS = {"reward_head": check_reward_head, "judge_head": check_judge_head, "group_select": check_group_select}
