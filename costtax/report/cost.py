"""Cost columns of summary.csv, per unit (cell x load level x cell repeat) or pooled over a
row's repeats: latency percentiles, throughput in the unit's timed window, tokens, reward-model
work, TTFT/TPOT, meter readings (energy, memory, CPU/GPU time), load-level columns (offered vs
achieved answers/s, queueing, goodput), and the median-across-repeats aggregation."""
from __future__ import annotations

import statistics
from typing import Any

from .. import stats as M
from ..load.levels import LoadLevel
from ..store.records import GEN_STAGES


def _real(x) -> bool:
    """A recorded number: not None, not NaN (a table cell the record left empty)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x

METER_COLUMNS = (  # copied from the cell's ResourceMeter reading as they are
    "rss_peak_bytes", "memory_source", "gpu_mem_peak_bytes", "torch_peak_allocated_bytes",
    "energy_j", "energy_method", "power_mean_w",
)


def cell_cost(a, c, cell_row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = len(a)
    lat = list(a["latency_s"]) if n else []
    p = M.percentiles(lat)
    out["latency_p50_s"], out["latency_p95_s"], out["latency_p99_s"] = p["p50"], p["p95"], p["p99"]
    out["latency_mean_s"] = M.mean_or_none(lat)
    ci = M.bootstrap_ci(lat, stat="median") if lat else None  # one unit's answers; a row's own: latency_cis
    out["latency_p50_ci95_lo_s"], out["latency_p50_ci95_hi_s"] = ci if ci else (None, None)
    wall = cell_row.get("cell_wall_s") or None
    out["cell_wall_s"] = wall
    tech = c[c["stage"] != "eval"] if len(c) else c
    gen = tech[tech["stage"].isin(list(GEN_STAGES))] if len(tech) else tech
    score = tech[tech["stage"] == "score"] if len(tech) else tech
    out_tokens = float(gen["output_tokens"].sum()) if len(gen) else 0.0
    # Throughput counts only the work inside the cell's timed window: after a resume, answers
    # finished by an earlier session are not in it.
    resumed = int(cell_row.get("resumed_answers") or 0)
    out["resumed_answers"] = resumed
    n_window = n - resumed
    sess = cell_row.get("session")
    win_tokens = float(gen[gen["session"] == sess]["output_tokens"].sum()) if (resumed and len(gen) and "session" in gen) else out_tokens
    out["answers_per_s"] = (n_window / wall) if wall else None
    out["output_tokens_per_s"] = (win_tokens / wall) if wall else None
    out["output_tokens_per_answer"] = (out_tokens / n) if n else None
    prompt_served = float((gen["prompt_tokens"] * gen["n"]).sum()) if len(gen) else 0.0
    cached = gen["cached_prompt_tokens"].dropna() if len(gen) else []
    cached_sum = float(cached.sum()) if len(cached) else None
    out["prompt_tokens_per_answer"] = (prompt_served / n) if n else None
    out["cached_prompt_tokens_per_answer"] = (cached_sum / n) if (n and cached_sum is not None) else None
    computed = gen["prompt_tokens_computed"].dropna() if len(gen) and "prompt_tokens_computed" in gen else []
    out["prefill_tokens_computed_per_answer"] = (float(computed.sum()) / n) if (n and len(computed)) else None
    out["prefix_cache_hit_rate"] = (cached_sum / prompt_served) if (cached_sum is not None and prompt_served) else None
    out["calls_per_answer"] = (len(tech) / n) if n else None
    out["reward_tokens_per_answer"] = (float(score["prompt_tokens"].sum()) / n) if n else None
    # Shared-prefix scoring: tokens the reward model computed (a best-of-N group's prompt once,
    # then each response) vs reused from its KV caches; None where the scorer does not say.
    computed = list(score["reward_tokens_computed"]) if len(score) and "reward_tokens_computed" in score else []
    computed = [x for x in computed if _real(x)]
    out["reward_tokens_computed_per_answer"] = (float(sum(computed)) / n) if (n and computed and len(computed) == len(score)) else None
    score_s = float(score["latency_s"].sum()) if len(score) else 0.0
    out["score_latency_s_per_answer"] = (score_s / n) if n else None
    # Share of the cell's wall time the reward model was busy with selection scoring. Score
    # calls of concurrent answers ride in shared micro-batches, so their latencies overlap: sum
    # the batches' own scoring time (cells.jsonl score_batches); older runs without batches fall
    # back to the sum of score-call latencies (calls ran one at a time then).
    batches = cell_row.get("score_batches")
    busy = sum(float(b.get("score_s") or 0) for b in batches) if isinstance(batches, list) and batches else score_s
    out["score_share_of_wall"] = (busy / wall) if wall else None
    samp = gen[gen["stage"] == "sample"] if len(gen) else gen
    ttft = [x for x in samp["ttft_s"] if x is not None and x == x] if len(samp) else []
    out["ttft_p50_s"] = M.percentiles(ttft)["p50"] if ttft else None
    out["ttft_source"] = (samp["ttft_source"].dropna().iloc[0] if len(samp) and samp["ttft_source"].notna().any() else None)
    # time per output token of sample calls: (latency - ttft) / (tokens per sample - 1)
    tpot = []
    for _, r in samp.iterrows() if len(samp) else []:
        per_sample = r["output_tokens"] / max(r["n"], 1)
        if r["ttft_s"] is not None and r["ttft_s"] == r["ttft_s"] and per_sample > 1:
            tpot.append((r["latency_s"] - r["ttft_s"]) / (per_sample - 1))
    out["tpot_p50_s"] = M.percentiles(tpot)["p50"] if tpot else None
    meter = cell_row.get("meter") or {}
    for key in METER_COLUMNS:
        out[key] = meter.get(key)
    out["energy_j_per_answer"] = (meter["energy_j"] / n) if (n and meter.get("energy_j") is not None) else None
    out["energy_j_per_output_token"] = (
        meter["energy_j"] / out_tokens if (out_tokens and meter.get("energy_j") is not None) else None
    )
    es = cell_row.get("engine_stats") or {}
    out["kv_cache_usage_peak"] = es.get("kv_cache_usage_peak")  # vLLM gauge, fraction of the KV pool
    out["engine_prefix_cache_hits"] = es.get("prefix_cache_hits")  # engine counter, cross-checks the rows
    out["cpu_s_per_answer"] = (meter["cpu_s"] / n) if (n and meter.get("cpu_s") is not None) else None
    out["gpu_s_per_answer"] = (meter["gpu_s"] / n) if (n and meter.get("gpu_s") is not None) else None
    out["peak_memory_bytes"] = out["gpu_mem_peak_bytes"] if out["gpu_mem_peak_bytes"] is not None else out["rss_peak_bytes"]
    out["foreign_cpu_share"] = meter.get("foreign_cpu_share")
    return out


# Timing metrics that vary run to run: with --cell-repeats R the row reports the median of the
# R per-repeat values and their spread (repeat_min_*, repeat_max_*), so drift and order effects
# show up as spread instead of as a tax. Token counts and quality pool every repeat's answers.
REPEAT_METRICS = (
    "latency_p50_s", "latency_p95_s", "latency_p99_s", "cell_wall_s", "answers_per_s", "output_tokens_per_s",
    "ttft_p50_s", "tpot_p50_s", "cpu_s_per_answer", "gpu_s_per_answer", "energy_j", "energy_j_per_answer",
    "energy_j_per_output_token", "score_share_of_wall", "achieved_answers_per_s", "goodput_answers_per_s",
)
SPREAD_METRICS = ("latency_p50_s", "latency_p95_s", "answers_per_s", "achieved_answers_per_s", "energy_j_per_answer")


def load_metrics(a, c, unit: dict, level: LoadLevel, slo: float | None) -> dict[str, Any]:
    """Load-level columns of one unit (or pooled): achieved vs offered answers/s, saturation,
    queueing delay, TTFT of each answer's first call, goodput under the SLO."""
    ls = unit.get("load_stats") or {}
    if not isinstance(ls, dict):
        ls = {}
    out: dict[str, Any] = {
        "load_mode": level.mode,
        "load_level": float(level.value) if level.value is not None else None,
        "offered_answers_per_s": ls.get("offered_answers_per_s"),
        "achieved_answers_per_s": ls.get("achieved_answers_per_s"),
        "saturated": bool(ls.get("saturated")) if ls else None,
        "level_timed_out": bool(ls.get("timed_out")) if ls else None,
    }
    q = []
    if len(c) and "queue_s" in c:
        q = [x for x in c["queue_s"] if _real(x)]
    out["queue_p50_s"] = M.percentiles(q)["p50"] if q else None
    out["queue_p95_s"] = M.percentiles(q)["p95"] if q else None
    ttft = [x for x in (a["ttft_s"] if len(a) and "ttft_s" in a else []) if x is not None and x == x]
    out["first_call_ttft_p50_s"] = M.percentiles(ttft)["p50"] if ttft else None
    if slo and len(a) and out["achieved_answers_per_s"]:
        good = sum(1 for x in a["latency_s"] if x <= slo) / len(a)
        out["goodput_answers_per_s"] = out["achieved_answers_per_s"] * good
    else:
        out["goodput_answers_per_s"] = None
    if len(c) and "score_wait_s" in c:
        waits = [x for x, st in zip(c["score_wait_s"], c["stage"]) if st == "score" and _real(x)]
        sizes = [x for x, st in zip(c["score_batch_pairs"], c["stage"]) if st == "score" and _real(x)]
        out["score_wait_p50_s"] = M.percentiles(waits)["p50"] if waits else None
        out["score_batch_pairs_mean"] = M.mean_or_none(sizes)
    return out


def latency_cis(a, c, level: LoadLevel) -> dict[str, Any]:
    """A row's p50 and p95 intervals by the rule compare uses (costtax.load.blocks.latency_interval:
    repeats, else blocks of answers that shared their fate, else for a batch its answers), and
    what each resampled (`latency_ci95_from`)."""
    from types import SimpleNamespace

    from ..load.blocks import latency_interval

    def val(x):
        return x if _real(x) else None

    cols = [k for k in ("answer_id", "cell_repeat", "probe", "admission", "t_arrival_s", "latency_s") if k in a]
    rows = [SimpleNamespace(**{k: val(v) if k != "answer_id" else v for k, v in zip(cols, t)}) for t in zip(*(a[k] for k in cols))]
    for r in rows:
        r.admission = int(r.admission) if getattr(r, "admission", None) is not None else None
        r.cell_repeat, r.probe = int(getattr(r, "cell_repeat", 0) or 0), int(getattr(r, "probe", 0) or 0)
    passes: dict[str, set] = {}
    if len(c) and "batch_id" in c:
        for aid, st, b, k, pr in zip(c["answer_id"], c["stage"], c["batch_id"], c["cell_repeat"], c["probe"]):
            if st == "score" and isinstance(b, str) and b:
                passes.setdefault(aid, set()).add((k, pr, b))
    conc = int(level.value) if level.mode == "concurrency" else None
    out: dict[str, Any] = {}
    for q in (50, 95):
        lo, hi, src = latency_interval(rows, level.mode, conc, q, passes)
        out[f"latency_p{q}_ci95_lo_s"], out[f"latency_p{q}_ci95_hi_s"] = lo, hi
        out["latency_ci95_from"] = src
    return out


def repeat_aggregate(per_unit: list[dict]) -> dict[str, Any]:
    """Median across cell repeats of the timing metrics, and their spread."""
    out: dict[str, Any] = {"cell_repeats": len(per_unit)}
    if len(per_unit) < 2:
        for m in SPREAD_METRICS:
            v = per_unit[0].get(m) if per_unit else None
            out[f"repeat_min_{m}"] = out[f"repeat_max_{m}"] = v
        return out
    for m in REPEAT_METRICS:
        vals = [u.get(m) for u in per_unit if isinstance(u.get(m), (int, float)) and u.get(m) == u.get(m)]
        if vals:
            out[m] = statistics.median(vals)
            if m in SPREAD_METRICS:
                out[f"repeat_min_{m}"], out[f"repeat_max_{m}"] = min(vals), max(vals)
    return out


