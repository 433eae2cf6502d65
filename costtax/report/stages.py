"""Cost per stage (sample, continue, critique, revise, score) and the waste ratio, per summary row.

Per stage, per final answer: computed tokens, call time, the stage's share of the answer's
latency, and its share of the cell's time (and so of its CPU seconds, device seconds and energy).

**Busy-time attribution** (how overlapping calls are counted): the cell's metered window (each
cell repeat's, summed) is cut at every call start and finish; a stretch where calls of k
different stages are in progress is split equally among those k stages (however many calls of
each: the reward model's micro-batch is one pass, and on one machine the stages share the same
cores); a stretch with no call in progress is `idle` (the harness between calls, ramp-up and
ramp-down of the closed loop). So the stages' busy shares plus the idle share are exactly 1, and
a stage's CPU seconds, device seconds and energy are the cell's totals times its share: they add
up to the cell's totals by construction. It is an attribution convention, not a per-process
measurement (on this CPU the vLLM server and the in-process reward model compete for the same
two cores). Evaluation scoring (`eval`) runs after the window and is not a stage of the answer.

**Latency share**: per answer, the union of its own calls of that stage (in time) over the
answer's latency, averaged over answers; `stage_other_latency_share` is the rest (time between an
answer's calls: the batcher's wait is inside the score call, so this is the harness alone).

**Waste ratio**: tokens computed (prefill actually computed, every decoded token, every reward-
model token computed) over the analytic minimum for the technique: each answer's conversation
prefilled once (a call's prompt counts only the tokens that extend the previous call's prompt and
output, so a best-of-N's n samples and a critique round's re-sent history count once), each
generated token once, and the reward model reading the prompt once (the generation call's prompt
tokens, a proxy for its length in the judge's template) plus each response; the judge template
itself is the same for every call, so a reward model that caches it computes it once per run and
it counts zero per answer (measured: the judge computes 352 of the 1714 tokens it reads for a
best-of-4 group, fewer than its prompt's four copies alone). 1.0 is the physical minimum per answer; vLLM on CPU recomputing the partial prefix block per
sample shows up as > 1, and answers that share a prompt (cycled prompts, --repeats) can read it
from each other's prefix cache and go below 1.
"""
from __future__ import annotations

from typing import Any

STAGE_ORDER = ("sample", "continue", "critique", "revise", "score")
PLAN_GROUPS = {"generation": ("sample", "continue"), "critique_revise": ("critique", "revise"), "selection": ("score",)}


def busy_time(intervals: list[tuple[float, float, str]], t0: float, t1: float) -> dict[str, float]:
    """Seconds of [t0, t1] attributed to each stage (and 'idle'): at any moment the time is split
    equally among the stages with a call in progress. A sweep line, O(n log n) in calls: the
    window is cut at every (clamped) call start and finish, and each stretch adds to the stages
    whose count of calls in progress is positive, in time order (the same sums, in the same
    order, as testing every call against every stretch)."""
    clamp = [(max(t0, min(t1, a)), max(t0, min(t1, b)), s) for a, b, s in intervals]
    events = sorted({t0, t1, *(x for a, b, _ in clamp for x in (a, b))})
    delta: dict[float, list[tuple[str, int]]] = {}
    for a, b, s in clamp:
        if a < b:  # a call in progress during some stretch of the window
            delta.setdefault(a, []).append((s, 1))
            delta.setdefault(b, []).append((s, -1))
    running: dict[str, int] = {}
    out: dict[str, float] = {"idle": 0.0}
    for a, b in zip(events, events[1:]):
        for s, d in delta.get(a, ()):
            running[s] = running.get(s, 0) + d
        active = [s for s, k in running.items() if k > 0]
        if not active:
            out["idle"] += b - a
        for s in active:
            out[s] = out.get(s, 0.0) + (b - a) / len(active)
    return out


def _num(x) -> bool:
    return isinstance(x, (int, float)) and x == x


def _min_tokens(calls: list[dict]) -> float:
    """Analytic minimum tokens of one answer's calls (module docstring)."""
    total = 0.0
    prev_ctx = 0.0
    for c in sorted((c for c in calls if c["stage"] in STAGE_ORDER[:4]), key=lambda c: c.get("t_submit_s") or 0):
        p = float(c.get("prompt_tokens") or 0)
        n = max(int(c.get("n") or 1), 1)
        out = float(c.get("output_tokens") or 0)
        total += max(0.0, p - prev_ctx) + out
        prev_ctx = p + out / n
    gen = sorted((c for c in calls if c["stage"] in STAGE_ORDER[:4]), key=lambda c: c.get("t_submit_s") or 0)
    prompt = float(gen[0].get("prompt_tokens") or 0) if gen else 0.0
    for c in calls:
        if c["stage"] != "score":
            continue
        read = float(c.get("prompt_tokens") or 0)
        responses = sum(float(x.get("output_tokens") or 0) for x in calls if x["stage"] in ("sample", "continue", "revise"))
        total += min(prompt + responses, read)
    return total


def _computed_tokens(c: dict) -> float:
    if c["stage"] == "score":
        # rundata.Call lifts the scorer's count out of `extra` into this typed field; a score
        # call whose scorer does not say counts every token it read as computed
        rc = c.get("reward_tokens_computed")
        return float(rc) if _num(rc) else float(c.get("prompt_tokens") or 0)
    pc = c.get("prompt_tokens_computed")
    prefill = float(pc) if _num(pc) else float(c.get("prompt_tokens") or 0) * max(int(c.get("n") or 1), 1)
    return prefill + float(c.get("output_tokens") or 0)


def stage_columns(units: list[dict], calls: list[dict], answers: list[dict]) -> dict[str, Any]:
    """The row's stage and waste columns from its ok units (cells.jsonl records), its calls (eval
    excluded here) and its answers."""
    calls = [c for c in calls if c.get("stage") in STAGE_ORDER]
    n = len(answers)
    out: dict[str, Any] = {}
    if not n:
        return out
    busy: dict[str, float] = {}
    wall = 0.0
    for u in units:
        k = int(u.get("cell_repeat", 0))
        t0, t1 = u.get("t_start_s"), u.get("t_end_s")
        if not (_num(t0) and _num(t1)) or t1 <= t0:
            continue
        iv = [(float(c["t_submit_s"]), float(c["t_finish_s"]), c["stage"]) for c in calls
              if int(c.get("cell_repeat", 0)) == k and _num(c.get("t_submit_s")) and _num(c.get("t_finish_s"))]
        for s, v in busy_time(iv, float(t0), float(t1)).items():
            busy[s] = busy.get(s, 0.0) + v
        wall += float(t1) - float(t0)
    meter_cpu = sum(float((u.get("meter") or {}).get("cpu_s")) for u in units if _num((u.get("meter") or {}).get("cpu_s")))
    has_cpu = any(_num((u.get("meter") or {}).get("cpu_s")) for u in units)
    by_answer: dict[str, list[dict]] = {}
    for c in calls:
        by_answer.setdefault(c["answer_id"], []).append(c)
    lat = {a["answer_id"]: float(a["latency_s"]) for a in answers if _num(a.get("latency_s")) and a["latency_s"] > 0}
    for s in STAGE_ORDER:
        sc = [c for c in calls if c["stage"] == s]
        present = bool(sc)
        out[f"stage_{s}_tokens_per_answer"] = sum(_computed_tokens(c) for c in sc) / n if present else None
        out[f"stage_{s}_call_s_per_answer"] = sum(float(c.get("latency_s") or 0) for c in sc) / n if present else None
        shares = []
        for aid, L in lat.items():
            spans = sorted((float(c["t_submit_s"]), float(c["t_finish_s"])) for c in by_answer.get(aid, []) if c["stage"] == s)
            covered, end = 0.0, None
            for a, b in spans:
                if end is None or a > end:
                    covered += b - a
                    end = b
                elif b > end:
                    covered += b - end
                    end = b
            shares.append(min(covered / L, 1.0))
        out[f"stage_{s}_latency_share"] = (sum(shares) / len(shares)) if (present and shares) else None
        share = busy.get(s, 0.0) / wall if wall else None
        out[f"stage_{s}_busy_share"] = share if present else None
        out[f"stage_{s}_cpu_s_per_answer"] = (meter_cpu * share / n) if (present and has_cpu and share is not None) else None
    got = [out[f"stage_{s}_latency_share"] for s in STAGE_ORDER if out[f"stage_{s}_latency_share"] is not None]
    out["stage_other_latency_share"] = max(0.0, 1.0 - sum(got)) if got else None
    out["stage_idle_share"] = busy.get("idle", 0.0) / wall if wall else None
    computed = sum(_computed_tokens(c) for c in calls)
    minimum = sum(_min_tokens(cs) for cs in by_answer.values())
    out["tokens_computed_per_answer"] = computed / n
    out["tokens_min_per_answer"] = minimum / n
    out["waste_ratio"] = computed / minimum if minimum else None
    return out


def row_stage_columns(cell: str, load: str, data: dict[str, Any]) -> dict[str, Any]:
    """One summary row's stage and waste columns, from the run's frames (report/summary.py)."""
    answers, calls, cells = data["answers"], data["calls"], data["cells"]
    u = cells[(cells["cell"] == cell) & (cells["load"] == load)] if len(cells) else cells
    units = [r for r in u.to_dict("records") if r.get("status") == "ok"] if len(u) else []
    a = answers[(answers["cell"] == cell) & (answers["load"] == load)] if len(answers) else answers
    c = calls[(calls["cell"] == cell) & (calls["load"] == load)] if len(calls) else calls
    return stage_columns(units, c.to_dict("records") if len(c) else [], a.to_dict("records") if len(a) else [])


def add_stage_columns(df, data: dict[str, Any], rows: dict[tuple[str, str], dict[str, Any]] | None = None):
    """Stage and waste columns on every row (report/summary.py calls this); `rows`: those already
    computed, by (cell, load)."""
    import pandas as pd

    rows = rows or {}
    got = [rows.get((row["cell"], row["load"])) for _, row in df.iterrows()]
    got = [g if g is not None else row_stage_columns(row["cell"], row["load"], data) for g, (_, row) in zip(got, df.iterrows())]
    from .columns import STAGE_COLUMNS

    names = [col.name for col in STAGE_COLUMNS]
    extra = pd.DataFrame([{k: r.get(k) for k in names} for r in got], index=df.index, dtype=object)
    return pd.concat([df, extra], axis=1)
