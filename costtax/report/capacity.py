"""Summary columns of the capacity search and of early-stopped levels (costtax.search,
costtax.oversaturation), added to the rows summary.py built. Every probe row says which probe
it was, its role and verdict, with its p95's CI; every row of a searched cell carries the cell's
result (capacity, its interval, how the search ended)."""
from __future__ import annotations

from typing import Any

PROBE_COLUMNS = ("search_probe_index", "search_role", "search_held", "search_verdict_certain", "search_planned_answers", "search_verdict")
CELL_COLUMNS = (
    "capacity_concurrency", "capacity_rate", "capacity_answers_per_s", "capacity_lo", "capacity_hi", "capacity_hi_bounded",
    "capacity_answers_per_s_lo", "capacity_answers_per_s_hi", "search_status", "search_bracket", "search_probes",
    "search_slo_p95_s",
)


def add_capacity_columns(df, data: dict[str, Any]):
    """p95 CI and early-stop columns on every row; search columns on a search run's rows."""
    from ..search import SearchSpec, capacity, p95_ci, replay, verdicts

    meta, answers, cells = data["meta"], data["answers"], data["cells"]
    lo, hi, stop, over = [], [], [], []
    for _, row in df.iterrows():
        a = answers[(answers["cell"] == row["cell"]) & (answers["load"] == row["load"])] if len(answers) else answers
        lat = [x for x in (a["latency_s"] if len(a) else []) if x == x and x is not None]
        ci = p95_ci(lat)
        lo.append(ci[0] if ci else None)
        hi.append(ci[1] if ci else None)
        u = cells[(cells["cell"] == row["cell"]) & (cells["load"] == row["load"])] if len(cells) else cells
        stats = [s for s in (u["load_stats"] if "load_stats" in u else []) if isinstance(s, dict)]
        reasons = [s.get("stop_reason") for s in stats if s.get("stop_reason")]
        stop.append(reasons[0] if reasons else None)
        over.append(any(bool(s.get("oversaturated")) for s in stats) if stats else None)
    import pandas as pd

    added = {"latency_p95_ci95_lo_s": lo, "latency_p95_ci95_hi_s": hi, "stop_reason": stop, "oversaturated": over}
    added.update({c: [None] * len(df) for c in PROBE_COLUMNS + CELL_COLUMNS})
    df = pd.concat([df, pd.DataFrame(added, index=df.index, dtype=object)], axis=1)
    raw = meta.get("search")
    if not raw:
        return df
    spec = SearchSpec(**raw)
    cell_rows = cells.to_dict("records") if len(cells) else []
    ans_rows = answers[["cell", "load", "cell_repeat", "latency_s"]].to_dict("records") if len(answers) else []
    repeats = int((meta.get("config") or {}).get("cell_repeats") or 1)
    for cell in dict.fromkeys(df["cell"]):
        seq, pending = replay(spec, verdicts(spec, cell, cell_rows, ans_rows, repeats))
        cap = capacity(spec, seq, pending)
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
            "capacity_concurrency": cap.capacity if spec.mode == "concurrency" else None,
            "capacity_rate": cap.capacity if spec.mode == "rate" else None,
            "capacity_answers_per_s": cap.answers_per_s,
            "capacity_lo": cap.lo, "capacity_hi": cap.hi, "capacity_hi_bounded": cap.hi_bounded,
            "capacity_answers_per_s_lo": cap.answers_per_s_lo, "capacity_answers_per_s_hi": cap.answers_per_s_hi,
            "search_status": cap.status,
            "search_bracket": (f"{spec.level(cap.capacity).label} held, {spec.level(cap.bracket_fail).label} did not"
                               if cap.capacity and cap.bracket_fail else None),
            "search_probes": cap.probes,
            "search_slo_p95_s": spec.slo_p95_s,
        }
        for k, v in values.items():
            df.loc[idx, k] = v
    return df
