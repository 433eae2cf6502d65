"""Per-cell aggregation of scored answers: pass@1 and refusal rates with their intervals, and the
capability tax / safety gain of a cell against plain, paired by prompt.

Inputs are the per-answer dicts from costtax.prompts.grading.evaluate_answers (one per final
answer of a cell); outputs are flat summary columns. Keys absent from every answer give None.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..prompts.pass_at_k import pass_at_k_mean
from ..stats import paired_bootstrap_delta_ci, rate_with_ci

__all__ = ["scored_deltas", "summarize_scored_answers"]



def summarize_scored_answers(evals: Sequence[Mapping], alpha: float = 0.05) -> dict[str, float | int | None]:
    """Cell-level summary columns from per-answer evaluation dicts.

    * code (``scorer == "pass_at_k"``): ``pass_at_1`` (share of final answers whose code passes)
      with a Wilson ``pass_at_1_ci_low``/``_high``, ``n_code_answers``, ``code_timeouts``; and when
      answers carry best-of-N candidates, ``candidates_pass_at_<k>`` (unbiased estimator, mean
      over problems) for k = 1 and every power of two up to the smallest candidate count;
    * refusal (``scorer == "refusal"``): ``refusal_rate_rule`` and ``refusal_rate_judge`` with
      Wilson CIs, ``refusal_disagreement`` (share of answers both scorers judged where they
      differ) and ``n_refusal_answers``.
    """
    code = [e for e in evals if e.get("scorer") == "pass_at_k"]
    out: dict[str, float | int | None] = {}
    rate, lo, hi = rate_with_ci((e.get("code_passed") for e in code), alpha)
    out.update(pass_at_1=rate, pass_at_1_ci_low=lo, pass_at_1_ci_high=hi, n_code_answers=len(code))
    out["code_timeouts"] = sum(1 for e in code if e.get("code_fail_reason") == "timeout") if code else None
    counts = [(e["candidates_n"], e["candidates_passed"]) for e in code if e.get("candidates_n")]
    if counts:
        n_min = min(n for n, _ in counts)
        k = 1
        while k <= n_min:
            out[f"candidates_pass_at_{k}"] = pass_at_k_mean(counts, k)
            k *= 2
    ref = [e for e in evals if e.get("scorer") == "refusal"]
    for key in ("rule", "judge"):
        rate, lo, hi = rate_with_ci((e.get(f"refusal_{key}") for e in ref), alpha)
        out[f"refusal_rate_{key}"] = rate
        out[f"refusal_rate_{key}_ci_low"] = lo
        out[f"refusal_rate_{key}_ci_high"] = hi
    both = [e for e in ref if e.get("refusal_rule") is not None and e.get("refusal_judge") is not None]
    out["refusal_disagreement"] = (
        sum(1 for e in both if bool(e["refusal_rule"]) != bool(e["refusal_judge"])) / len(both) if both else None
    )
    out["n_refusal_answers"] = len(ref)
    return out


_DELTA_FIELDS = {"pass_at_1": "code_passed", "refusal_rate_rule": "refusal_rule", "refusal_rate_judge": "refusal_judge"}


def scored_deltas(
    baseline: Sequence[Mapping], cell: Sequence[Mapping], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float | None]:
    """Capability tax / safety gain of a cell against the baseline (plain) cell, paired by prompt.

    Each evaluation dict needs ``prompt_id``. For ``pass_at_1``, ``refusal_rate_rule`` and
    ``refusal_rate_judge``: ``<col>_delta`` (cell minus baseline, on prompts both scored) and a
    paired-bootstrap ``<col>_delta_ci_low``/``_high`` (:func:`paired_bootstrap_delta_ci`). With
    repeats, a prompt's value is the mean over its answers.
    """
    def by_prompt(evals, field):
        acc: dict[str, list[float]] = {}
        for e in evals:
            if e.get(field) is not None:
                acc.setdefault(str(e["prompt_id"]), []).append(float(bool(e[field])))
        return {k: sum(v) / len(v) for k, v in acc.items()}

    out: dict[str, float | None] = {}
    for col, field in _DELTA_FIELDS.items():
        b, c = by_prompt(baseline, field), by_prompt(cell, field)
        keys = sorted(b.keys() & c.keys())
        a_vals, b_vals = [c[k] for k in keys], [b[k] for k in keys]
        out[f"{col}_delta"] = float(np.mean(np.subtract(a_vals, b_vals))) if keys else None
        ci = paired_bootstrap_delta_ci(a_vals, b_vals, n_boot=n_boot, alpha=alpha, seed=seed)
        out[f"{col}_delta_ci_low"], out[f"{col}_delta_ci_high"] = ci if ci else (None, None)
    return out
