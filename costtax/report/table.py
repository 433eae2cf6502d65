"""The tax table printed at the end of a run: which summary columns, their headers and formats."""
from __future__ import annotations

from ._values import truthy as _truthy

# Other processes busy on more than a tenth of the run's CPUs. On the 2-core CPU machine a pytest
# run beside a cell (about 0.4-0.5) tripled plain's p50 in the README demo, and two busy loops
# pinned to both cores doubled it at a share just under 0.25 (bench/results/aa-compare-cpu-quiet-
# 2026-12-06/hog), the old threshold; quiet runs there stay at or under 0.02.
CONTENTION_WARN_SHARE = 0.10

HEADLINE = [
    ("cell", "cell", None),
    ("answers", "n", "{:d}"),
    ("latency_p50_s", "p50 s", "{:.2f}"),
    ("latency_p50_x", "p50 ×", "{:.2f}"),
    ("latency_p95_x", "p95 ×", "{:.2f}"),
    ("output_tokens_per_answer_x", "tok/ans ×", "{:.2f}"),
    ("cpu_s_per_answer_x", "CPU-s ×", "{:.2f}"),
    ("gpu_s_per_answer_x", "GPU-s ×", "{:.2f}"),
    ("energy_j_per_answer_x", "J/ans ×", "{:.2f}"),
    ("peak_memory_x", "mem ×", "{:.2f}"),
    ("answers_per_s", "ans/s", "{:.2f}"),
    ("prefix_cache_hit_rate", "cache hit", "{:.0%}"),
    ("eval_reward_mean", "reward", "{:+.2f}"),
    ("eval_reward_delta_vs_plain", "Δreward", "{:+.2f}"),
    ("win_rate_vs_plain", "win", "{:.0%}"),
    ("proxy_win_rate_vs_plain", "win (proxy)", "{:.0%}"),
    ("accuracy_delta_vs_plain", "Δacc", "{:+.0%}"),
    ("distinct_2", "dist-2", "{:.2f}"),
    ("pareto", "pareto", None),
]


# Abbreviations a narrow terminal gets (explained in a legend under the table); a header not
# named here is short enough already. Keyed by summary.csv column.
SHORT = {
    "achieved_answers_per_s": "got/s",
    "output_tokens_per_answer_x": "tok×",
    "cpu_s_per_answer_x": "CPU×",
    "gpu_s_per_answer_x": "GPU×",
    "energy_j_per_answer_x": "J×",
    "prefix_cache_hit_rate": "hit",
    "eval_reward_mean": "rwd",
    "eval_reward_delta_vs_plain": "Δrwd",
    "proxy_win_rate_vs_plain": "win*",
    "dist_2": "d2",
    "distinct_2": "d2",
    "pareto": "★",
}
LOAD_COLUMNS = [("achieved_answers_per_s", "ans/s achieved", "{:.2f}"), ("saturated", "sat", None)]


def tax_table(df, title: str):
    """The tax table as a FitTable (costtax/report/fit.py): printed fitted to the terminal."""
    from .fit import FitColumn, make_table

    header, rows, keys = headline_rows(df, with_keys=True)
    cols = [FitColumn(k, h, SHORT.get(k), justify="left" if k == "cell" else "right", label=k == "cell")
            for k, h in zip(keys, header)]
    return make_table(title, cols, rows)


def _label(r, several_loads: bool) -> str:
    return f"{r['cell']} @ {r['load']}" if several_loads and "load" in r else str(r["cell"])


def headline_rows(df, *, with_keys: bool = False):
    """Header and formatted cells of the tax table; columns that are null everywhere are dropped.
    A failed row's cell reads "NAME (FAILED)"; its error is one of row_warnings' lines.
    `with_keys`: also the summary.csv column of each header."""
    cols = [(k, h, f) for k, h, f in HEADLINE if k in df and df[k].notna().any()]
    several = "load" in df and df["load"].nunique() > 1
    if several:
        df = df.assign(cell=[_label(r, True) for _, r in df.iterrows()])
        cols = cols[:2] + [c for c in LOAD_COLUMNS if c[0] in df] + cols[2:]
    rows = []
    for _, r in df.iterrows():
        cells = []
        for k, _, f in cols:
            v = r[k]
            if v is None or (isinstance(v, float) and v != v):
                cells.append("—")
            elif k == "pareto":
                cells.append("★" if _truthy(v) else "")
            elif k == "saturated":
                cells.append("yes" if _truthy(v) else "")
            elif f:
                try:
                    cells.append(f.format(int(v) if f == "{:d}" else float(v)))
                except (TypeError, ValueError):
                    cells.append(str(v))
            else:
                cells.append(str(v) + ("" if r.get("status", "ok") == "ok" else " (FAILED)"))
        rows.append(cells)
    if with_keys:
        return [h for _, h, _ in cols], rows, [k for k, _, _ in cols]
    return [h for _, h, _ in cols], rows



def reward_model_line(meta: dict) -> str | None:
    """The table's header line about the selection reward model: how far to trust reward and
    win-rate, from run.json (own pairs accuracy, public held-out AUC, weak-proxy label)."""
    rm = meta.get("reward_model") or {}
    if not rm:
        return None
    parts = [f"reward model {rm.get('spec')}"]
    pa = rm.get("pairs_accuracy") or {}
    if pa.get("accuracy") is not None:
        parts.append(f"own good/bad pairs {pa.get('correct', round(pa['accuracy'] * pa.get('n', 0)))}/{pa.get('n')}")
    pc = rm.get("public_calibration") or {}
    if pc.get("auc") is not None:
        # side by side, so the judge's marginal value over the rule is visible (it can be negative)
        rule = pc.get("with_refusal_rule") or {}
        s = f"public held-out AUC (n={pc.get('n')}, {pc.get('dataset', 'public set')}): judge alone {pc['auc']:.2f}"
        if rule.get("rule_alone_auc") is not None:
            s += f", refusal rule alone {rule['rule_alone_auc']:.2f}"
        if rule.get("auc") is not None:
            s += f", judge + rule {rule['auc']:.2f} (rule on declared-harmful prompts only)"
        parts.append(s)
    elif pc.get("skipped"):
        parts.append("public calibration skipped: " + str(pc["skipped"]))
    weak = bool(pc.get("weak_proxy") or rm.get("weak_proxy"))
    line = "; ".join(parts)
    if weak:
        line = "WEAK PROXY — " + line + ": reward and win-rate columns are a weak proxy for quality (README: Reward models)"
    return line


def row_warnings(df) -> list[str]:
    """One line per steady-state or sanity problem the summary flags, naming the row."""
    out = []
    several = "load" in df and df["load"].nunique() > 1
    for _, r in df.iterrows():
        name = _label(r, several)
        if r.get("status", "ok") not in ("ok", None) and isinstance(r.get("status"), str):
            out.append(f"warning: {name}: FAILED: {r.get('error')}")
        if "cold_outlier" in r and _truthy(r["cold_outlier"]):
            out.append(f"warning: {name}: cold start in the numbers ({r.get('cold_outlier_reason')}); rerun with --cell-repeats 3 or more --warmup-answers")
        flags = r.get("sanity_flags")
        if isinstance(flags, str) and flags:
            out.append(f"warning: {name}: sanity check failed: {flags.replace(';', ', ')} (see the flag_* columns)")
        if "aa_ok" in r and r["aa_ok"] is not None and r["aa_ok"] == r["aa_ok"] and not _truthy(r["aa_ok"]):
            out.append(
                f"warning: {name}: plain repeats disagree on {r.get('aa_metric') or 'latency'} beyond the run's noise band "
                f"({float(r['aa_max_rel_diff']):.0%} vs {float(r['aa_noise_band_rel']):.0%}): the machine drifted; treat multipliers with care"
            )
        for col, what in (("reward_length_strong", "final answers' reward"), ("candidate_reward_length_strong", "candidates' selection reward")):
            if col in r and _truthy(r[col]):
                rho = r.get("reward_length_rho" if col == "reward_length_strong" else "candidate_reward_length_rho")
                lean = "rewarding verbosity" if float(rho) > 0 else "penalising length"
                out.append(f"warning: {name}: {what} tracks length (Spearman {float(rho):+.2f}): the reward model may be {lean}")
        share = r.get("foreign_cpu_share")
        if isinstance(share, (int, float)) and share == share and share > CONTENTION_WARN_SHARE:
            out.append(
                f"warning: {name}: other processes kept {share:.0%} of this machine's CPUs busy during the cell: "
                "its times are inflated by neighbours; rerun on a quiet machine, or with --cell-repeats 3 to see the spread"
            )
        acc = r.get("accounting_violations")
        if isinstance(acc, (int, float)) and acc == acc and acc > 0:
            out.append(f"warning: {name}: {int(acc)} accounting violation(s), e.g. {r.get('accounting_example')}")
    return out
