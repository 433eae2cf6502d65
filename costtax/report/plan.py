"""Capacity plan from the measured latency-vs-throughput curve (summary.csv only).

Per cell: the highest sustainable answers/s per replica whose p95 latency meets the SLO, read off
the load levels the run measured (concurrency or rate levels, unsaturated ones), interpolated
linearly between the last level that meets the SLO and the first that does not, never
extrapolated past the highest level measured (then the capacity reads "at least X, beyond the
measured range"). Replicas = ceil(QPS / capacity); $ and kWh per 1M answers at that capacity.
A `--load search` run at the plan's SLO gives its bracketed capacity directly (the achieved
answers/s of the highest level that held, below the lowest that did not), with its interval
carried into low/high replica and $ columns (replicas_low from the interval's high end,
replicas_high from its low end; empty where that end is 0 or unbounded). At another SLO the
search's verdicts do not apply: its probes are read as an ordinary curve, as above, and the basis
says so. A run with only the offline batch level falls back to the batch throughput at the batch's p95,
labelled so: it cannot see queueing.

Quality floors hold when the lower end of the metric's 95% CI is at or above the floor (the
evaluation reward model's numbers where the run had one, else the proxy, labelled).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..load.levels import BATCH, LOADED_MODES
from ._values import is_num as _num, truthy as _truthy
from .capacity import search_capacity
from .plan_out import stage_split
from .summary import ensure_summary

FLOOR_COLUMNS = {  # floor name -> (summary column of the CI low end, point estimate)
    "min_reward": ("eval_reward_ci95_lo", "eval_reward_mean"),
    "min_accuracy": ("accuracy_ci95_lo", "accuracy"),
    "min_win_rate": ("win_rate_ci95_lo", "win_rate_vs_plain"),
}


def sustainable_rate(points: list[tuple[float, float, float]], slo_p95_s: float) -> tuple[float | None, str]:
    """Points are (load level, achieved answers/s, p95 s) of unsaturated levels of one kind
    (concurrency or rate). Returns (capacity, basis), basis one of 'interpolated', 'measured',
    'at least (beyond the measured range)', 'infeasible: ...'.

    The curve is followed in order of offered load, not of throughput: a higher load level can
    deliver less (thrashing), and its failing p95 must not be jumped over. Capacity is the best
    throughput among levels meeting the SLO; between the highest level that meets it and the
    next one (which does not), the SLO crossing is interpolated linearly when throughput still
    rises there. Never extrapolated: when the highest measured level meets the SLO the capacity
    is "at least" its throughput."""
    pts = sorted((lv, a, p) for lv, a, p in points if _num(lv) and _num(a) and _num(p) and a > 0)
    if not pts:
        return None, "no measured level"
    ok = [i for i, (_, _, p) in enumerate(pts) if p <= slo_p95_s]
    if not ok:
        return None, "infeasible: p95 above the SLO at every measured level"
    best = max(pts[i][1] for i in ok)
    j = max(ok)
    if j == len(pts) - 1:
        return best, "at least (beyond the measured range)"
    (_, a0, p0), (_, a1, p1) = pts[j], pts[j + 1]
    if p1 > p0 and a1 > a0:
        cross = a0 + (slo_p95_s - p0) / (p1 - p0) * (a1 - a0)
        if cross > best:
            return cross, "interpolated"
    return best, "measured"


def _first(g, col):
    vals = g[col].dropna() if col in g else []
    return vals.iloc[0] if len(vals) else None


def capacity_plan(
    run_dir: str | Path,
    *,
    qps: float,
    slo_p95_s: float,
    usd_per_device_hour: float | None = None,
    min_reward: float | None = None,
    min_accuracy: float | None = None,
    min_win_rate: float | None = None,
):
    """Replicas, $ and kWh per 1M answers per cell for `qps` answers/s under a p95 SLO.

    A replica ("device") is what ran the profile: one GPU, one server costtax drove (however many
    GPUs it spans), or this whole CPU machine."""
    import pandas as pd

    df = ensure_summary(run_dir)  # the table the run wrote: no metric is recomputed
    floors = {k: v for k, v in (("min_reward", min_reward), ("min_accuracy", min_accuracy), ("min_win_rate", min_win_rate)) if v is not None}
    rows = []
    order = list(dict.fromkeys(df["cell"]))
    for cell in order:
        g = df[(df["cell"] == cell) & (df.get("status", "ok") == "ok")]
        if g.empty:
            rows.append({"cell": cell, "feasible": False, "basis": "cell failed"})
            continue
        loaded = g[g["load_mode"].isin(LOADED_MODES)] if "load_mode" in g else g.iloc[0:0]
        searched = search_capacity(g, slo_p95_s)  # --load search at this SLO: its bracket, directly
        cap_lo = cap_hi = None
        if searched is not None:
            cap, basis, curve = searched["capacity"], searched["basis"], searched["curve"]
            cap_lo, cap_hi = searched["capacity_lo"], searched["capacity_hi"]
        elif len(loaded):
            usable = loaded[[not _truthy(s) for s in loaded.get("saturated", [False] * len(loaded))]]
            # one curve per load kind; a run with both concurrency and rate levels takes the better
            caps = [
                sustainable_rate(list(zip(m["load_level"], m["achieved_answers_per_s"], m["latency_p95_s"])), slo_p95_s)
                for _, m in usable.groupby("load_mode")
            ]
            caps = [c for c in caps if c[0] is not None] or caps or [(None, "no measured level")]
            cap, basis = max(caps, key=lambda c: c[0] or 0)
            if cap is None and len(usable) < len(loaded) and "infeasible" not in basis:
                basis = "infeasible: every measured level saturated"
            curve = "load levels: " + ", ".join(str(x) for x in loaded["load"])
            other = g["search_slo_p95_s"].dropna() if "search_slo_p95_s" in g else []
            if len(other):
                basis += f" (search ran at p95 <= {float(other.iloc[0]):g} s: its probes read as a curve)"
        else:
            b = g.iloc[0]
            aps, p95 = b.get("answers_per_s"), b.get("latency_p95_s")
            cap = aps if (_num(aps) and _num(p95) and p95 <= slo_p95_s) else None
            basis = "offline batch estimate (no load levels: queueing not measured)" if cap else "infeasible at the measured batch size (offline batch)"
            curve = BATCH.label
        # energy per answer: from the row closest to the chosen operating point, else any row
        ref = g.iloc[0]
        if cap is not None and len(loaded):
            ref = loaded.iloc[(loaded["achieved_answers_per_s"] - cap).abs().argsort().iloc[0]]
        e = ref.get("energy_j_per_answer")
        if not _num(e):
            e = next((x for x in g.get("energy_j_per_answer", []) if _num(x)), None)
        replicas = math.ceil(qps / cap - 1e-9) if cap else None
        # neighbours during the measurement understate capacity: the worst share over the rows used
        used = loaded if len(loaded) else g.iloc[0:1]
        shares = [x for x in used.get("foreign_cpu_share", []) if _num(x)]
        quality_row = g[g["load_mode"] == BATCH.mode].iloc[0] if ("load_mode" in g and (g["load_mode"] == BATCH.mode).any()) else g.iloc[0]
        row: dict[str, Any] = {
            "cell": cell,
            "target_qps": qps,
            "slo_p95_s": slo_p95_s,
            "capacity_answers_per_s": cap,
            "basis": basis,
            "curve": curve,
            "feasible": cap is not None,
            "replicas_needed": replicas,
            "devices_needed": replicas,  # kept for earlier plan.csv readers
            "usd_per_device_hour": usd_per_device_hour,
            "usd_per_1m_answers": (1e6 * usd_per_device_hour / 3600 / cap) if (usd_per_device_hour is not None and cap) else None,
            "capacity_answers_per_s_lo": cap_lo,
            "capacity_answers_per_s_hi": cap_hi,
            "replicas_low": math.ceil(qps / cap_hi - 1e-9) if cap_hi else None,
            "replicas_high": math.ceil(qps / cap_lo - 1e-9) if cap_lo else None,
            "usd_per_1m_answers_low": (1e6 * usd_per_device_hour / 3600 / cap_hi) if (usd_per_device_hour is not None and cap_hi) else None,
            "usd_per_1m_answers_high": (1e6 * usd_per_device_hour / 3600 / cap_lo) if (usd_per_device_hour is not None and cap_lo) else None,
            "capacity_concurrency": _first(g, "capacity_concurrency"),
            "search_status": _first(g, "search_status"),
            "usd_per_1k_answers": (1e3 * usd_per_device_hour / 3600 / cap) if (usd_per_device_hour is not None and cap) else None,
            "usd_per_hour_at_target": (replicas * usd_per_device_hour) if (replicas and usd_per_device_hour is not None) else None,
            "energy_j_per_answer": e if _num(e) else None,
            "kwh_per_1m_answers": (e * 1e6 / 3.6e6) if _num(e) else None,
            "device": ref.get("device"),
            "model": ref.get("model"),
            "quality_source": quality_row.get("eval_reward_source"),
            "curve_foreign_cpu_share_max": max(shares) if shares else None,
        }
        row.update(stage_split(ref, row))  # $ and kWh per 1M answers by stage (plan_out.py)
        for q in ("eval_reward_mean", "eval_reward_ci95_lo", "eval_reward_ci95_hi"):
            row[f"quality_{q}"] = quality_row.get(q) if _num(quality_row.get(q)) else None
        holds = True
        for name, floor in floors.items():
            lo_col, est_col = FLOOR_COLUMNS[name]
            if name == "min_win_rate" and not _num(quality_row.get(lo_col)) and quality_row.get("eval_reward_source") == "proxy":
                est_col = "proxy_win_rate_vs_plain"
            lo = quality_row.get(lo_col)
            row[f"{name}_ci95_lo"] = lo if _num(lo) else None
            row[f"{name}_estimate"] = quality_row.get(est_col) if _num(quality_row.get(est_col)) else None
            ok = _num(lo) and lo >= floor
            row[f"{name}_holds"] = bool(ok)
            holds = holds and bool(ok)
        row["quality_floor_holds"] = holds if floors else None
        rows.append(row)
    plan = pd.DataFrame(rows)
    base = plan[plan["cell"] == "plain"]
    b = base.iloc[0]["replicas_needed"] if len(base) else None
    plan["replicas_x_plain"] = [r / b if (_num(r) and _num(b) and b) else None for r in plan.get("replicas_needed", [])]
    plan["devices_x_plain"] = plan["replicas_x_plain"]
    eligible = plan[(plan["feasible"] == True) & ((plan["quality_floor_holds"] != False) if floors else True)]  # noqa: E712
    cost_col = "usd_per_1m_answers" if plan.get("usd_per_1m_answers") is not None and eligible.get("usd_per_1m_answers", pd.Series(dtype=float)).notna().any() else "replicas_needed"
    cheapest = eligible.sort_values([cost_col, "capacity_answers_per_s"], ascending=[True, False]).iloc[0]["cell"] if len(eligible) else None
    plan["cheapest"] = [c == cheapest for c in plan["cell"]]
    return plan
