"""Capacity plan: devices, dollars and joules per cell for a target load, from summary.csv."""
from __future__ import annotations

from pathlib import Path

from .summary import ensure_summary


def capacity_plan(run_dir: str | Path, *, qps: float, slo_p95_s: float, usd_per_device_hour: float | None = None):
    """Devices needed per cell to serve `qps` final answers/s within a p95 latency SLO.

    Model (stated in every row): one device sustains the cell's measured offline-batch
    throughput (answers_per_s) at the measured per-answer p95 latency; devices = ceil(qps /
    answers_per_s) when p95 <= SLO, else the cell is infeasible at the measured batch size
    (smaller batches would lower latency and throughput: measure them with a smaller --limit).
    A "device" is what ran the profile: one GPU, or this whole CPU machine.
    """
    import math

    import pandas as pd

    df = ensure_summary(run_dir)  # the table the run wrote: no metric is recomputed
    rows = []
    for _, r in df.iterrows():
        aps, p95 = r.get("answers_per_s"), r.get("latency_p95_s")
        ok = r.get("status") == "ok" and aps and aps == aps and p95 == p95
        feasible = bool(ok and p95 <= slo_p95_s)
        devices = math.ceil(qps / aps) if feasible else None
        row = {
            "cell": r["cell"],
            "target_qps": qps,
            "slo_p95_s": slo_p95_s,
            "measured_p95_s": p95,
            "answers_per_s_per_device": aps,
            "feasible": feasible,
            "devices_needed": devices,
            "device": r.get("device"),
            "energy_j_per_answer": r.get("energy_j_per_answer"),
            "usd_per_device_hour": usd_per_device_hour,
            "usd_per_1k_answers": (1000 * usd_per_device_hour / 3600 / aps) if (usd_per_device_hour and ok) else None,
            "usd_per_hour_at_target": (devices * usd_per_device_hour) if (devices and usd_per_device_hour) else None,
            "devices_x_plain": None,
            "model": "offline-batch throughput per device; p95 at the measured batch size",
        }
        rows.append(row)
    plan = pd.DataFrame(rows)
    base = plan[plan["cell"] == "plain"]
    if not base.empty and base.iloc[0]["devices_needed"]:
        b = base.iloc[0]["devices_needed"]
        plan["devices_x_plain"] = [d / b if d else None for d in plan["devices_needed"]]
    return plan
