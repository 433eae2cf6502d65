"""When cell repeats disagree, name what moved, with numbers.

A row with --cell-repeats R >= 2 whose repeats' p95 latencies spread by more than
`DRIFT_REL` (max / min - 1) gets `repeat_drift_note`: the p95 range, then every per-repeat
quantity below that moved by more than `MOVED_REL`, each as its per-repeat values in repeat
order:
- reward passes: prompt/response pairs per reward-model pass (mean over the unit's passes,
  cells.jsonl `score_batches`) and the scoring share of the unit's wall (sum of the passes'
  scoring time / wall): the reward micro-batcher's behaviour;
- output tokens per answer (sampled lengths differ between repeats at temperature > 0);
- foreign_cpu_share (neighbours on the machine).
The per-repeat batching values are also columns (`repeat_score_pairs_per_pass`,
`repeat_score_share_of_wall`, `;`-separated in repeat order), so a reader can see them when the
note is silent.
"""
from __future__ import annotations

from typing import Any

DRIFT_REL = 0.10
MOVED_REL = 0.10


def _rel_spread(vals: list[float]) -> float:
    vals = [v for v in vals if v is not None]
    return (max(vals) / min(vals) - 1) if vals and min(vals) > 0 else 0.0


def repeat_values(units: list[dict], answers, calls) -> dict[str, list]:
    """Per-repeat values of one row's units (cells.jsonl records in repeat order)."""
    import numpy as np

    out: dict[str, list] = {"p95": [], "pairs_per_pass": [], "score_share": [], "tokens": [], "foreign": []}
    for u in units:
        k = int(u.get("cell_repeat", 0))
        lat = [x for x in (answers[answers["cell_repeat"] == k]["latency_s"] if len(answers) else []) if x == x]
        out["p95"].append(float(np.percentile(lat, 95)) if lat else None)
        batches = u.get("score_batches") if isinstance(u.get("score_batches"), list) else []
        wall = u.get("cell_wall_s") or 0
        out["pairs_per_pass"].append(sum(b.get("pairs", 0) for b in batches) / len(batches) if batches else None)
        out["score_share"].append(sum(float(b.get("score_s") or 0) for b in batches) / wall if (batches and wall) else None)
        c = calls[(calls["cell_repeat"] == k) & (calls["stage"].isin(["sample", "critique", "revise", "continue"]))] if len(calls) else calls
        out["tokens"].append(float(c["output_tokens"].sum()) / len(lat) if (len(c) and lat) else None)
        meter = u.get("meter") if isinstance(u.get("meter"), dict) else {}
        out["foreign"].append(meter.get("foreign_cpu_share"))
    return out


def drift_note(vals: dict[str, list]) -> str | None:
    p95 = [v for v in vals["p95"] if v is not None]
    if len(p95) < 2 or _rel_spread(p95) <= DRIFT_REL:
        return None
    parts = [f"latency p95 {min(p95):.3g}..{max(p95):.3g} s across {len(p95)} repeats (+{_rel_spread(p95):.0%})"]

    def seq(key, fmt):
        return " -> ".join(fmt.format(v) if v is not None else "?" for v in vals[key])

    batching = []
    if _rel_spread([v for v in vals["pairs_per_pass"] if v]) > MOVED_REL:
        batching.append(f"pairs per pass {seq('pairs_per_pass', '{:.1f}')}")
    if _rel_spread([v for v in vals["score_share"] if v]) > MOVED_REL:
        batching.append(f"scoring share of wall {seq('score_share', '{:.2f}')}")
    if batching:
        parts.append("score batching moved: " + ", ".join(batching))
    if _rel_spread([v for v in vals["tokens"] if v]) > MOVED_REL:
        parts.append(f"output tokens per answer moved: {seq('tokens', '{:.1f}')}")
    foreign = [v for v in vals["foreign"] if isinstance(v, (int, float))]
    if foreign and max(foreign) - min(foreign) > 0.05:
        parts.append(f"foreign_cpu_share moved: {seq('foreign', '{:.2f}')}")
    if len(parts) == 1:
        parts.append("none of score batching, output length or neighbours moved by more than 10 %")
    return "; ".join(parts)


def add_repeat_drift(df, data: dict[str, Any]):
    """repeat_drift_note, repeat_score_pairs_per_pass, repeat_score_share_of_wall per row."""
    answers, calls, cells = data["answers"], data["calls"], data["cells"]
    notes, pairs, shares = [], [], []
    for _, row in df.iterrows():
        units = cells[(cells["cell"] == row["cell"]) & (cells["load"] == row["load"])] if len(cells) else cells
        units = sorted(units.to_dict("records"), key=lambda u: int(u.get("cell_repeat", 0))) if len(units) else []
        units = [u for u in units if u.get("status") == "ok"]
        a = answers[(answers["cell"] == row["cell"]) & (answers["load"] == row["load"])] if len(answers) else answers
        c = calls[(calls["cell"] == row["cell"]) & (calls["load"] == row["load"])] if len(calls) else calls
        vals = repeat_values(units, a, c) if units else None
        notes.append(drift_note(vals) if vals and len(units) > 1 else None)
        fmt = lambda xs, f: ";".join(f.format(x) if x is not None else "" for x in xs) if xs and any(x is not None for x in xs) else None  # noqa: E731
        pairs.append(fmt(vals["pairs_per_pass"], "{:.2f}") if vals else None)
        shares.append(fmt(vals["score_share"], "{:.3f}") if vals else None)
    df["repeat_drift_note"], df["repeat_score_pairs_per_pass"], df["repeat_score_share_of_wall"] = notes, pairs, shares
    return df
