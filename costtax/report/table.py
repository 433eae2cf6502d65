"""The tax table printed at the end of a run: which summary columns, their headers and formats."""
from __future__ import annotations

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


def headline_rows(df) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the tax table; columns that are null everywhere are dropped."""
    cols = [(k, h, f) for k, h, f in HEADLINE if k in df and df[k].notna().any()]
    rows = []
    for _, r in df.iterrows():
        cells = []
        for k, _, f in cols:
            v = r[k]
            if v is None or (isinstance(v, float) and v != v):
                cells.append("—")
            elif k == "pareto":
                cells.append("★" if bool(v) else "")
            elif f:
                try:
                    cells.append(f.format(int(v) if f == "{:d}" else float(v)))
                except (TypeError, ValueError):
                    cells.append(str(v))
            else:
                cells.append(str(v) + ("" if r.get("status", "ok") == "ok" else f" (FAILED: {r.get('error')})"))
        rows.append(cells)
    return [h for _, h, _ in cols], rows
