"""What `costtax plan` writes besides plan.csv: the stage split of $ and kWh per 1M answers,
plan.md (the table a planner reads) and plan.png ($ per 1M answers at the SLO against quality,
with the quality's 95% CI, the Pareto front marked).

Stage split: the summary row at the plan's operating point carries each stage's busy share of
the cell's wall time (report/stages.py, busy-time attribution); a replica is paid (and draws
power) for every second, so $ and kWh per 1M answers split in those shares, the idle share
(no call in progress) included, and the parts add up to the whole. Groups: generation (sample,
continue), critique_revise (critique, revise), selection (score), idle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ._values import is_num

GROUPS = {"generation": ("sample", "continue"), "critique_revise": ("critique", "revise"), "selection": ("score",)}


def stage_split(ref, row: dict[str, Any]) -> dict[str, Any]:
    """usd_/kwh_per_1m_answers_<group> from the reference row's busy shares."""
    shares: dict[str, float | None] = {}
    for g, stages in GROUPS.items():
        vals = [ref.get(f"stage_{s}_busy_share") for s in stages]
        vals = [float(v) for v in vals if is_num(v)]
        shares[g] = sum(vals) if vals else (0.0 if any(is_num(ref.get(f"stage_{s}_busy_share")) for gs in GROUPS.values() for s in gs) else None)
    idle = ref.get("stage_idle_share")
    shares["idle"] = float(idle) if is_num(idle) else None
    out: dict[str, Any] = {}
    for g, share in shares.items():
        out[f"stage_share_{g}"] = share
        for total in ("usd_per_1m_answers", "kwh_per_1m_answers"):
            t = row.get(total)
            out[f"{total}_{g}"] = t * share if (is_num(t) and share is not None) else None
    return out


def _f(v, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else fmt.format(v)


def markdown(plan, *, qps: float, slo_p95_s: float) -> str:
    """plan.md: one row per cell."""
    price = plan["usd_per_1m_answers"].notna().any() if "usd_per_1m_answers" in plan else False
    head = ["cell", "capacity (answers/s per replica)", "interval", "basis", "replicas (low..high)"]
    head += ["$ / 1M answers (low..high)", "$ split: generation / selection / critique+revise / idle"] if price else []
    head += ["kWh / 1M answers", "quality (eval reward, CI95)", "quality floor", "cheapest"]
    lines = [f"Capacity plan: {qps:g} answers/s, p95 <= {slo_p95_s:g} s", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in plan.iterrows():
        cells = [
            f"`{r['cell']}`",
            _f(r.get("capacity_answers_per_s"), "{:.3g}"),
            f"{_f(r.get('capacity_answers_per_s_lo'), '{:.3g}')}..{_f(r.get('capacity_answers_per_s_hi'), '{:.3g}')}",
            str(r.get("basis")).replace("|", "/"),
            f"{_f(r.get('replicas_needed'), '{:.0f}')} ({_f(r.get('replicas_low'), '{:.0f}')}..{_f(r.get('replicas_high'), '{:.0f}')})",
        ]
        if price:
            cells.append(f"{_f(r.get('usd_per_1m_answers'), '{:,.0f}')} ({_f(r.get('usd_per_1m_answers_low'), '{:,.0f}')}..{_f(r.get('usd_per_1m_answers_high'), '{:,.0f}')})")
            cells.append(" / ".join(_f(r.get(f"usd_per_1m_answers_{g}"), "{:,.0f}") for g in ("generation", "selection", "critique_revise", "idle")))
        q = r.get("quality_eval_reward_mean")
        cells += [
            _f(r.get("kwh_per_1m_answers"), "{:,.2f}"),
            f"{_f(q, '{:.3f}')} ({_f(r.get('quality_eval_reward_ci95_lo'), '{:.3f}')}..{_f(r.get('quality_eval_reward_ci95_hi'), '{:.3f}')})",
            {True: "holds", False: "NOT MET"}.get(r.get("quality_floor_holds"), "—"),
            "★" if r.get("cheapest") else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Interval: the capacity search's (costtax/load/search.py); replicas_low from its high end, replicas_high from its low end. "
              "Stage split: busy-time attribution (costtax/report/stages.py)."]
    return "\n".join(lines) + "\n"


def plot(plan, path: Path, *, qps: float, slo_p95_s: float) -> Path | None:
    """plan.png: cost per 1M answers at the SLO (x; replicas when no price was given) vs quality
    with its 95% CI (y), the Pareto front (lower cost, higher quality) joined and marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..stats import pareto_front

    price = "usd_per_1m_answers" in plan and plan["usd_per_1m_answers"].notna().any()
    xcol, xlabel = ("usd_per_1m_answers", "$ per 1M answers at the SLO") if price else ("replicas_needed", f"replicas for {qps:g} answers/s")
    pts = [(r["cell"], r.get(xcol), r.get("quality_eval_reward_mean"), r.get("quality_eval_reward_ci95_lo"), r.get("quality_eval_reward_ci95_hi"),
            r.get(f"{xcol}_low" if price else "replicas_low"), r.get(f"{xcol}_high" if price else "replicas_high"))
           for _, r in plan.iterrows()]
    pts = [p for p in pts if is_num(p[1]) and is_num(p[2])]
    if not pts:
        return None
    front = pareto_front([p[1] for p in pts], [p[2] for p in pts])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (cell, x, y, lo, hi, xl, xh), on in zip(pts, front):
        yerr = [[y - lo], [hi - y]] if is_num(lo) and is_num(hi) else None
        xerr = [[x - xl], [xh - x]] if is_num(xl) and is_num(xh) else None
        ax.errorbar([x], [y], yerr=yerr, xerr=xerr, fmt="o" if on else "s", color="C3" if on else "C0", capsize=4, ms=7)
        ax.annotate(cell + (" (Pareto)" if on else ""), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    fr = sorted((p[1], p[2]) for p, on in zip(pts, front) if on)
    if len(fr) > 1:
        ax.plot([a for a, _ in fr], [b for _, b in fr], "--", color="C3", lw=1, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    xs = [p[1] for p in pts] + [p[6] for p in pts if is_num(p[6])]
    ax.set_xlim(0, max(xs) * 1.25)
    ax.set_xlabel(xlabel + " (bars: capacity interval)")
    ax.set_ylabel("eval reward (mean, 95% CI)")
    ax.set_title(f"capacity plan at p95 <= {slo_p95_s:g} s, {qps:g} answers/s", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plan_outputs(plan, run_dir: Path, *, qps: float, slo_p95_s: float) -> list[Path]:
    """plan.md and plan.png next to plan.csv; returns the files written."""
    run_dir = Path(run_dir)
    md = run_dir / "plan.md"
    md.write_text(markdown(plan, qps=qps, slo_p95_s=slo_p95_s), encoding="utf-8")
    out = [md]
    png = plot(plan, run_dir / "plan.png", qps=qps, slo_p95_s=slo_p95_s)
    if png is not None:
        out.append(png)
    return out
