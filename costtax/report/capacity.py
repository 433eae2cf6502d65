"""Summary columns of the capacity search and of early-stopped levels (costtax.load.search,
costtax.load.oversaturation), added to the rows summary.py built. Every probe row says which probe
it was, its role and verdict, with its p95's CI; every row of a searched cell carries the cell's
result (capacity, its interval, how the search ended)."""
from __future__ import annotations

from typing import Any

from ..load.levels import CLOSED_LOOP, OPEN_LOOP

PROBE_COLUMNS = ("search_probe_index", "search_role", "search_held", "search_verdict_certain", "search_planned_answers", "search_verdict")
CELL_COLUMNS = (
    "capacity_concurrency", "capacity_rate", "capacity_answers_per_s", "capacity_lo", "capacity_hi", "capacity_hi_bounded",
    "capacity_answers_per_s_lo", "capacity_answers_per_s_hi", "search_status", "search_bracket", "search_probes",
    "search_slo_p95_s", "capacity_drift_from",
)


def add_capacity_columns(df, data: dict[str, Any]):
    """p95 CI and early-stop columns on every row; search columns on a search run's rows."""
    from ..load.search import SearchSpec, capacity, replay, verdicts
    from ..load.drift import drift_sd
    from ..load.search_interval import level_units

    meta, answers, cells = data["meta"], data["answers"], data["cells"]
    stop, over = [], []
    for _, row in df.iterrows():
        u = cells[(cells["cell"] == row["cell"]) & (cells["load"] == row["load"])] if len(cells) else cells
        stats = [s for s in (u["load_stats"] if "load_stats" in u else []) if isinstance(s, dict)]
        reasons = [s.get("stop_reason") for s in stats if s.get("stop_reason")]
        stop.append(reasons[0] if reasons else None)
        over.append(any(bool(s.get("oversaturated")) for s in stats) if stats else None)
    import pandas as pd

    added = {"stop_reason": stop, "oversaturated": over}  # the p95's CI: summary.py (report/cost.latency_cis)
    added.update({c: [None] * len(df) for c in PROBE_COLUMNS + CELL_COLUMNS})
    df = pd.concat([df, pd.DataFrame(added, index=df.index, dtype=object)], axis=1)
    raw = meta.get("search")
    if not raw:
        return df
    spec = SearchSpec(**raw)
    cell_rows = cells.to_dict("records") if len(cells) else []
    cols = [c for c in ("cell", "load", "cell_repeat", "latency_s", "probe", "admission", "t_arrival_s") if c in answers]
    ans_rows = answers[cols].to_dict("records") if len(answers) else []
    repeats = int((meta.get("config") or {}).get("cell_repeats") or 1)
    prov = meta.get("provenance") or {}
    sd, drift_from = drift_sd(prov.get("machine"), (prov.get("versions") or {}).get("costtax"))
    for cell in dict.fromkeys(df["cell"]):
        seq, pending = replay(spec, verdicts(spec, cell, cell_rows, ans_rows, repeats))
        cap = capacity(spec, seq, pending, level_units(spec, cell, cell_rows, ans_rows), drift_sd=sd)
        idx = df.index[df["cell"] == cell]
        for i, (v, role) in enumerate(seq):
            label = spec.level(v.value).label
            j = df.index[(df["cell"] == cell) & (df["load"] == label)]
            df.loc[j, "search_probe_index"] = i
            df.loc[j, "search_role"] = role
            df.loc[j, "search_held"] = v.held
            df.loc[j, "search_verdict_certain"] = v.certain
            df.loc[j, "search_planned_answers"] = v.planned
            df.loc[j, "search_verdict"] = v.reason
        values = {
            "capacity_concurrency": cap.capacity if spec.mode == CLOSED_LOOP else None,
            "capacity_rate": cap.capacity if spec.mode == OPEN_LOOP else None,
            "capacity_answers_per_s": cap.answers_per_s,
            "capacity_lo": cap.lo, "capacity_hi": cap.hi, "capacity_hi_bounded": cap.hi_bounded,
            "capacity_answers_per_s_lo": cap.answers_per_s_lo, "capacity_answers_per_s_hi": cap.answers_per_s_hi,
            "search_status": cap.status,
            "search_bracket": (f"{spec.level(cap.capacity).label} held, {spec.level(cap.bracket_fail).label} did not"
                               if cap.capacity and cap.bracket_fail else None),
            "search_probes": cap.probes,
            "search_slo_p95_s": spec.slo_p95_s,
            "capacity_drift_from": drift_from if cap.interval_from == "isotonic" else None,
        }
        for k, v in values.items():
            df.loc[idx, k] = v
    return df


def search_capacity(g, slo_p95_s: float) -> dict[str, Any] | None:
    """The plan's reading of a searched cell's rows `g` (summary.csv rows of one cell), or None
    when the cell was not searched, or was searched against another SLO (the plan then reads the
    probed levels as an ordinary curve; see plan.py). Keys: capacity, capacity_lo, capacity_hi
    (answers/s per replica), basis, curve."""
    from ._values import is_num

    if "search_status" not in g or not g["search_status"].notna().any():
        return None
    r = g[g["search_status"].notna()].iloc[0]
    s = r.get("search_slo_p95_s")
    if not is_num(s) or abs(float(s) - slo_p95_s) > 1e-9 * max(1.0, slo_p95_s):
        return None
    status = r["search_status"]
    cap = r.get("capacity_answers_per_s")
    lo, hi = r.get("capacity_answers_per_s_lo"), r.get("capacity_answers_per_s_hi")
    probes = g[g["search_probe_index"].notna()].sort_values("search_probe_index") if "search_probe_index" in g else g.iloc[0:0]
    curve = "search probes: " + ", ".join(str(x) for x in probes["load"])
    level = r.get("capacity_concurrency") if is_num(r.get("capacity_concurrency")) else r.get("capacity_rate")
    lvl = f"{int(level)} in flight" if is_num(r.get("capacity_concurrency")) else (f"{level:g} answers/s offered" if is_num(level) else "")
    interval = f"; interval {r.get('capacity_lo'):g}..{r.get('capacity_hi'):g}" if is_num(r.get("capacity_lo")) and is_num(r.get("capacity_hi")) else ""
    if status == "bracketed":
        basis = f"search: {r.get('search_bracket')} ({lvl}{interval})"
    elif status == "hit_cap":
        basis = f"search hit its cap ({lvl} held): at least"
    elif status == "budget":
        basis = f"search probe budget spent: {lvl} held, no adjacent failing level{interval}"
    elif status == "infeasible":
        return {"capacity": None, "capacity_lo": None, "capacity_hi": None, "curve": curve,
                "basis": "infeasible: the search's lowest level did not meet the SLO"}
    else:
        basis = "search unfinished (run interrupted)"
    return {
        "capacity": float(cap) if is_num(cap) and cap > 0 else None,
        "capacity_lo": float(lo) if is_num(lo) else None,
        "capacity_hi": float(hi) if is_num(hi) and status != "hit_cap" and bool(r.get("capacity_hi_bounded")) else None,
        "basis": basis,
        "curve": curve,
    }
