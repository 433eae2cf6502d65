"""The tax: ×plain multipliers, win-rate and quality deltas vs the plain baseline at the same
load level on the same prompts (paired, with bootstrap CIs), and the Pareto flag."""
from __future__ import annotations

from .. import stats as M

SMALL_N = 30  # below this many answers per cell, deltas are mostly noise: the table says so
# ×plain columns: each divides a row's value by the plain row's at the same load level. The one
# definition: summary.csv writes them, compare and the plugin's assertions read them.
MULTIPLIERS = {
    "latency_p50_x": "latency_p50_s",
    "latency_p95_x": "latency_p95_s",
    "cpu_s_per_answer_x": "cpu_s_per_answer",
    "gpu_s_per_answer_x": "gpu_s_per_answer",
    "output_tokens_per_answer_x": "output_tokens_per_answer",
    "energy_j_per_answer_x": "energy_j_per_answer",
    "peak_memory_x": "peak_memory_bytes",
}


def times_plain(value, plain_value) -> float | None:
    """value / plain's value; None where either is missing or plain's is zero."""
    return M.multiplier(value, plain_value)


def add_tax(df, answers, meta):
    """Multipliers and quality deltas vs the plain baseline at the same load level on the same
    prompts; Pareto flag."""
    import pandas as pd

    if answers.empty or "plain" not in set(df["cell"]):
        return df
    parts = [_add_tax_level(g.copy(), answers[answers["load"] == load], meta) for load, g in df.groupby("load", sort=False)]
    return pd.concat(parts).loc[df.index]


def _add_tax_level(df, answers, meta):
    base = df[df["cell"] == "plain"]
    if base.empty or answers.empty:
        return df
    b = base.iloc[0]
    for new, col in MULTIPLIERS.items():
        df[new] = [times_plain(v, b.get(col)) if col in df else None for v in (df[col] if col in df else [None] * len(df))]
    source = (meta.get("eval_reward") or {}).get("source")
    base_ans = answers[answers["cell"] == "plain"]
    key = lambda r: (r["prompt_id"], r.get("repeat", 0), r.get("cell_repeat", 0))  # noqa: E731
    base_eval = {key(r): r["eval_reward"] for _, r in base_ans.iterrows()} if "eval_reward" in base_ans else {}
    win, proxy_win, win_n, deltas, dlo, dhi, acc_d, wlo, whi = [], [], [], [], [], [], [], [], []
    for _, row in df.iterrows():
        a = answers[answers["cell"] == row["cell"]]
        cand = {key(r): r["eval_reward"] for _, r in a.iterrows()} if "eval_reward" in a else {}
        rate, n = M.win_rate(cand, base_eval)
        win.append(rate if source == "eval" else None)
        proxy_win.append(rate if source == "proxy" else None)
        win_n.append(n)
        shared = [k for k in cand if k in base_eval and cand[k] is not None and base_eval[k] is not None]
        diffs_a = [cand[k] for k in shared]
        diffs_b = [base_eval[k] for k in shared]
        deltas.append(M.mean_or_none([x - y for x, y in zip(diffs_a, diffs_b)]))
        # win-rate CI: bootstrap over prompts of the per-pair outcome (1 win, 0.5 tie, 0 loss)
        outcomes = [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(diffs_a, diffs_b)]
        wci = M.bootstrap_ci(outcomes) if outcomes else None
        wlo.append(wci[0] if wci else None)
        whi.append(wci[1] if wci else None)
        ci = M.paired_bootstrap_delta_ci(diffs_a, diffs_b) if shared else None
        dlo.append(ci[0] if ci else None)
        dhi.append(ci[1] if ci else None)
        acc = row.get("accuracy")
        acc_d.append(None if acc is None or b.get("accuracy") is None or acc != acc else acc - b.get("accuracy"))
    df["win_rate_vs_plain"] = win
    df["proxy_win_rate_vs_plain"] = proxy_win
    df["win_rate_n"] = win_n
    df["win_rate_ci95_lo"] = wlo
    df["win_rate_ci95_hi"] = whi
    df["eval_reward_delta_vs_plain"] = deltas
    df["eval_reward_delta_ci95_lo"] = dlo
    df["eval_reward_delta_ci95_hi"] = dhi
    df["accuracy_delta_vs_plain"] = acc_d
    df["eval_reward_source"] = source
    cost_col = "gpu_s_per_answer" if df.get("gpu_s_per_answer") is not None and df["gpu_s_per_answer"].notna().all() else "latency_p50_s"
    ok = df["status"] == "ok"
    costs = [c if o else None for c, o in zip(df[cost_col], ok)]
    quals = [q if o else None for q, o in zip(df.get("eval_reward_mean", [None] * len(df)), ok)]
    df["pareto"] = M.pareto_front(costs, quals)
    df["pareto_cost"] = cost_col
    df["noise_note"] = [
        f"n={n} < {SMALL_N}: deltas are mostly noise" if n < SMALL_N else "" for n in df["answers"]
    ]
    return df


