"""cost_quality.png and latency.png, drawn from the summary table (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

from ..load.levels import BATCH, CONCURRENCY_MODE, LOADED_MODES, RATE_MODE
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
    full = df
    if "load" in df and df["load"].nunique() > 1:
        # cost/quality and latency bars: one point per cell, at the offline batch level when the
        # run has one (else the first level); the load curve gets its own plot below.
        first = BATCH.label if (df["load"] == BATCH.label).any() else df["load"].iloc[0]
        df = df[df["load"] == first]

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
            _label(ax, df[xcol], x, y, r["cell"])
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

    # One more cost-vs-quality plot per scored quality metric the run has (sources' scorers).
    for ycol, lo_col, hi_col, label, fname in (
        ("pass_at_1", "pass_at_1_ci_low", "pass_at_1_ci_high", "pass@1 (HumanEval tests in the sandbox)", "cost_pass_at_1.png"),
        ("refusal_rate_rule", "refusal_rate_rule_ci_low", "refusal_rate_rule_ci_high", "refusal rate on harmful prompts (phrase rule)", "cost_refusal_rate.png"),
        ("accuracy", "accuracy_ci95_lo", "accuracy_ci95_hi", "accuracy (reference answers)", "cost_accuracy.png"),
    ):
        if ycol in df and df[ycol].notna().any():
            written.append(_cost_metric_plot(run_dir, df, xcol, ycol, lo_col, hi_col, label, title, plt, run_dir / fname))

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
    if "load_mode" in full and full["load_mode"].isin(LOADED_MODES).any():
        written.append(_load_plot(run_dir, full, title, plt))
    return written


def _load_plot(run_dir: Path, df, title: str, plt) -> Path:
    """load.png: p95 latency vs achieved answers/s per cell (SLO line when the run had one), and
    goodput vs offered load for rate levels."""
    from ..store.rundata import RunData

    slo = RunData.open(run_dir, records=False).config.get("slo_p95_s")
    loaded = df[df["load_mode"].isin(LOADED_MODES)]
    rate = loaded[loaded["load_mode"] == RATE_MODE]
    fig, axes = plt.subplots(1, 2 if len(rate) else 1, figsize=(11 if len(rate) else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for cell, g in loaded.groupby("cell", sort=False):
        for mode, m in g.groupby("load_mode"):
            m = m.sort_values("load_level")  # the curve follows the offered load, C or R
            sat = [str(s).lower() == "true" for s in m.get("saturated", [False] * len(m))]
            line = ax.plot(m["achieved_answers_per_s"], m["latency_p95_s"], "-o" if mode == CONCURRENCY_MODE else "--s", ms=5, label=f"{cell} ({mode})")[0]
            for x, y, s, lv in zip(m["achieved_answers_per_s"], m["latency_p95_s"], sat, m["load_level"]):
                ax.annotate(f"{lv:g}" + (" sat" if s else ""), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color=line.get_color())
    if slo:
        ax.axhline(slo, color="tab:red", lw=1, ls=":", label=f"SLO p95 {slo:g}s")
    ax.set_xlabel("achieved answers/s (one replica)")
    ax.set_ylabel("p95 latency per final answer (s)")
    ax.set_title(f"Latency vs throughput — {title}\nlabels: concurrency C or rate R (answers/s)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if len(rate):
        ax2 = axes[0][1]
        for cell, g in rate.groupby("cell", sort=False):
            g = g.sort_values("load_level")
            y = g["goodput_answers_per_s"] if g["goodput_answers_per_s"].notna().any() else g["achieved_answers_per_s"]
            ax2.plot(g["load_level"], y, "-o", ms=5, label=cell)
        lim = float(rate["load_level"].max()) * 1.05
        ax2.plot([0, lim], [0, lim], ":", color="grey", lw=1, label="offered = served")
        ax2.set_xlabel("offered answers/s (Poisson)")
        ax2.set_ylabel("goodput answers/s (within SLO)" if rate["goodput_answers_per_s"].notna().any() else "achieved answers/s")
        ax2.set_title("Goodput vs offered load", fontsize=9)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    p = run_dir / "load.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p



def _label(ax, xs, x, y, text) -> None:
    """A point's cell name: to its right, or to its left in the right third of the x range, so
    long names (bon_es:n=16,checkpoint=8,keep=0.25) stay inside the figure."""
    vals = [v for v in xs if v is not None and v == v]
    lo, hi = (min(vals), max(vals)) if vals else (x, x)
    right = hi > lo and x > lo + 0.66 * (hi - lo)
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(-6, 4) if right else (6, 4), fontsize=8,
                ha="right" if right else "left")


def _cost_metric_plot(run_dir: Path, df, xcol: str, ycol: str, lo_col: str, hi_col: str, label: str, title: str, plt, path: Path) -> Path:
    """Cost multiplier vs one quality metric, one point per cell with its 95% interval."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for _, r in df.iterrows():
        x, y = r.get(xcol), r.get(ycol)
        if x is None or y is None or x != x or y != y:
            continue
        lo, hi = r.get(lo_col), r.get(hi_col)
        yerr = [[max(y - lo, 0)], [max(hi - y, 0)]] if (lo is not None and hi is not None and lo == lo and hi == hi) else None
        ax.errorbar([x], [y], yerr=yerr, fmt="o", ms=7, capsize=3, color="tab:blue")
        _label(ax, df[xcol], x, y, r["cell"])
    ax.set_xlabel("latency p50 × plain" if xcol == "latency_p50_x" else "latency p50 (s)")
    ax.set_ylabel(label)
    n = int(df["answers"].min()) if "answers" in df else 0
    ax.set_title(f"Cost vs {ycol} — {title}\nerror bars: 95% interval, n={n} answers per cell", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
