"""The capacity search's interval when levels were measured more than once (cell repeats, the
search's re-probes; rules in costtax/load/search.py's docstring): every unit of each probed level read
from the rows, and the isotonic (non-decreasing) fit of p95 against load bootstrapped over units
and waves."""
from __future__ import annotations

from typing import Iterable

from .levels import CLOSED_LOOP


def _probe(r) -> int:
    p = r.get("probe")
    return int(p) if isinstance(p, (int, float)) and p == p else 0


def level_units(spec, cell: str, cell_rows: Iterable[dict], answers: Iterable[dict]) -> dict[float, list[dict]]:
    """Every recorded unit (cell repeat x probe) of each probed level of `cell`: its latencies in
    admission order, and `infinite` for a failed unit or one stopped because the SLO was out of
    reach (its p95 is above the SLO for certain)."""
    recs: dict[tuple[str, int, int], dict] = {}
    for r in cell_rows:
        if r.get("cell") == cell:
            recs[(r.get("load", "batch"), int(r.get("cell_repeat", 0)), _probe(r))] = r
    lat: dict[tuple[str, int, int], list[tuple]] = {}
    for a in answers:
        if a.get("cell") == cell:
            adm = a.get("admission")
            order = (0, adm) if isinstance(adm, (int, float)) and adm == adm else (1, a.get("t_arrival_s") or 0.0)
            lat.setdefault((a.get("load", "batch"), int(a.get("cell_repeat", 0)), _probe(a)), []).append((order, a.get("latency_s")))
    out: dict[float, list[dict]] = {}
    for key, r in recs.items():
        mode, _, value = key[0].partition("=")
        if mode != spec.mode or not value:
            continue
        stop = (r.get("load_stats") or {}).get("stop_reason") or ""
        rows = [x for _, x in sorted(lat.get(key, []), key=lambda t: t[0])]
        out.setdefault(float(value), []).append({
            "latencies": rows, "infinite": r.get("status") != "ok" or stop.startswith("slo_out_of_reach"),
            "cell_repeat": key[1], "probe": key[2],
            "achieved_answers_per_s": (r.get("load_stats") or {}).get("achieved_answers_per_s"),
        })
    return out



def _pava(y: list[float], w: list[float]) -> list[float]:
    """Non-decreasing least-squares fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for yi, wi in zip(y, w):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            mean = m1 if m1 == m2 else (m1 * w1 + m2 * w2) / (w1 + w2)
            blocks.append([mean, w1 + w2, n1 + n2])
    out: list[float] = []
    for m, _, n in blocks:
        out += [m] * n
    return out


def isotonic_interval(spec, units: dict[float, list[dict]], n_boot: int = 1000, seed: int = 0,
                      drift_sd: float = 0.0) -> tuple[float, float]:
    """95% interval of the capacity when p95 is fitted non-decreasing in load (isotonic regression,
    weights = units per level) and the fit is bootstrapped: per level, its units (cell repeats and
    re-probes) resampled, and within each unit its waves (blocks of C answers in admission order;
    rate: k blocks); the level's p95 is the median of its units'. Each replicate's capacity is the
    highest probed level whose fitted p95 meets the SLO (0 if none), its upper end one below the
    next probed level (closed loop; rate: that level). A failed unit, or one stopped because the
    SLO was out of reach, counts as p95 = infinity. `drift_sd` (costtax.load.drift.drift_sd): each
    replicate's p95s are multiplied by one common factor exp(N(0, drift_sd)), the drift between
    runs that units of one run share and so cannot show."""
    import numpy as np

    from .blocks import _row_percentile

    rng = np.random.default_rng(seed)
    values = sorted(units)
    stats, weights = [], []
    for v in values:
        per_unit = []
        for u in units[v]:
            lat = [float(x) for x in u.get("latencies") or [] if x is not None and x == x]
            if u.get("infinite") or not lat:
                per_unit.append(np.full(n_boot, np.inf))
                continue
            c = int(v) if spec.mode == CLOSED_LOOP else max(1, -(-len(lat) // spec.answers_per_slot))
            blocks = [lat[i:i + c] for i in range(0, len(lat), c)]
            pad = np.full((len(blocks), max(len(b) for b in blocks)), np.nan)
            for i, b in enumerate(blocks):
                pad[i, :len(b)] = b
            idx = rng.integers(0, len(blocks), (n_boot, len(blocks)))
            per_unit.append(_row_percentile(pad[idx].reshape(n_boot, -1), 95))
        mat = np.vstack(per_unit)
        if len(per_unit) > 1:
            pick = rng.integers(0, len(per_unit), (n_boot, len(per_unit)))
            stats.append(np.median(mat[pick, np.arange(n_boot)[:, None]], axis=1))
        else:
            stats.append(mat[0])
        weights.append(float(len(per_unit)))
    drift = np.exp(rng.normal(0.0, drift_sd, n_boot)) if drift_sd > 0 else np.ones(n_boot)
    caps, his = [], []
    for b in range(n_boot):
        fit = _pava([float(s[b]) * float(drift[b]) for s in stats], weights)
        ok = [v for v, f in zip(values, fit) if f <= spec.slo_p95_s]
        cap = max(ok) if ok else 0.0
        above = [v for v in values if v > cap]
        caps.append(cap)
        his.append((min(above) - 1 if spec.mode == CLOSED_LOOP else min(above)) if above else cap)
    lo = float(np.quantile(caps, 0.025, method="lower"))
    hi = float(np.quantile(his, 0.975, method="higher"))
    return lo, max(lo, hi)
