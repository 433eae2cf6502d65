"""cost_quality.png and latency.png, drawn from the summary table (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

from .summary import ensure_summary


def write_plots(run_dir: str | Path, df=None) -> list[Path]:
    """cost_quality.png (cost multiplier vs reward, Pareto front marked, 95% CIs) and
    latency.png (p50/p95 per cell). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    df = ensure_summary(run_dir) if df is None else df
    df = df[df["status"] == "ok"] if "status" in df else df
    written = []
    if df.empty:
        return written
    title = f"{df['model'].iloc[0] if 'model' in df else ''} on {df['device'].iloc[0] if 'device' in df else ''}"

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xcol = "latency_p50_x" if "latency_p50_x" in df and df["latency_p50_x"].notna().any() else "latency_p50_s"
    ycol = "eval_reward_mean"
    if ycol in df and df[ycol].notna().any():
        for _, r in df.iterrows():
            x, y = r.get(xcol), r.get(ycol)
            if x is None or y is None or x != x or y != y:
                continue
            lo, hi = r.get("eval_reward_ci95_lo"), r.get("eval_reward_ci95_hi")
            yerr = None
            if lo is not None and hi is not None and lo == lo and hi == hi:
                yerr = [[max(y - lo, 0)], [max(hi - y, 0)]]
            star = bool(r.get("pareto"))
            ax.errorbar([x], [y], yerr=yerr, fmt="*" if star else "o", ms=12 if star else 7, capsize=3,
                        color="tab:red" if star else "tab:blue")
            ax.annotate(r["cell"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        front = df[df.get("pareto", False) == True].sort_values(xcol)  # noqa: E712
        if len(front) > 1:
            ax.plot(front[xcol], front[ycol], "--", color="tab:red", lw=1, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        src = df["eval_reward_source"].iloc[0] if "eval_reward_source" in df else None
        ax.set_ylabel(f"mean reward of final answers ({'proxy: selection model' if src == 'proxy' else 'evaluation model'})")
    else:
        ax.text(0.5, 0.5, "no reward recorded (--eval-reward-model none)", ha="center", transform=ax.transAxes)
    ax.set_xlabel("latency p50 × plain" if xcol == "latency_p50_x" else "latency p50 (s)")
    n = int(df["answers"].min()) if "answers" in df else 0
    ax.set_title(f"Cost vs quality — {title}\nerror bars: bootstrap 95% CI, n={n} answers per cell", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = run_dir / "cost_quality.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(df)))
    ypos = list(range(len(df)))[::-1]
    ax.barh([y + 0.2 for y in ypos], df["latency_p50_s"].fillna(0), height=0.4, label="p50", color="tab:blue")
    ax.barh([y - 0.2 for y in ypos], df["latency_p95_s"].fillna(0), height=0.4, label="p95", color="tab:orange")
    if "score_latency_s_per_answer" in df:
        ax.barh([y + 0.2 for y in ypos], df["score_latency_s_per_answer"].fillna(0), height=0.4, label="of which reward scoring (mean)",
                color="tab:green", alpha=0.8)
    ax.set_yticks(ypos, df["cell"])
    ax.set_xlabel("end-to-end latency per final answer (s), offline batch")
    ax.set_title(f"Latency per answer — {title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    p = run_dir / "latency.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written
