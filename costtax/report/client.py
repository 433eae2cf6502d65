"""The client's gauges in summary.csv: loop lag and CPU share of the load generator, per row
(the worst cell repeat speaks for the row, as for foreign_cpu_share), from the cells.jsonl
`client` dict (costtax/metering/client_gauge.py)."""
from __future__ import annotations

from typing import Any, Sequence

from ._values import is_num

CLIENT_COLUMNS = ("client_loop", "client_lag_p50_s", "client_lag_p99_s", "client_lag_max_s", "client_cpu_share", "client_workers")


def client_columns(units: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The client columns of one row from its units' records (dicts with a `client` field)."""
    gauges = [u.get("client") for u in units if isinstance(u.get("client"), dict) and u.get("client")]
    out: dict[str, Any] = dict.fromkeys(CLIENT_COLUMNS)
    if not gauges:
        return out
    out["client_loop"] = ";".join(dict.fromkeys(str(g.get("loop")) for g in gauges))
    for col, key in (("client_lag_p50_s", "lag_p50_s"), ("client_lag_p99_s", "lag_p99_s"), ("client_lag_max_s", "lag_max_s"),
                     ("client_cpu_share", "cpu_share"), ("client_workers", "workers")):
        vals = [g[key] for g in gauges if is_num(g.get(key))]
        out[col] = max(vals) if vals else None
    return out


def lag_share_of_ttft(row) -> float | None:
    """client_lag_p50_s / ttft_p50_s of a summary row; None where either is missing."""
    lag, ttft = row.get("client_lag_p50_s"), row.get("ttft_p50_s")
    if is_num(lag) and is_num(ttft) and ttft > 0:
        return float(lag) / float(ttft)
    return None
