"""summary.csv: one row per cell, built from the run directory alone, so a crash, a resume or a
later `costtax report` all see the same data. The only code that builds DataFrames is this
package (costtax.report).

Every column is listed, with its unit and meaning, in costtax/report/columns.py (README's column
reference is generated from it). Contract columns come first, in a fixed order; new columns are
appended, none renamed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import stats as M
from ..prompts.exact_match import is_correct
from ..records import ANSWERS, CALLS, CELLS, GEN_STAGES, RUN_JSON, SCORES, SUMMARY, read_jsonl
from ..rewards.refusal_rule import is_refusal
from ._values import is_num as _num
from .columns import CONTRACT_COLUMNS, PARAM_PREFIX, param_columns
from .diversity import distinct_n, self_bleu
from .scored_answers import scored_deltas, summarize_scored_answers

METER_COLUMNS = (  # copied from the cell's ResourceMeter reading as they are
    "rss_peak_bytes", "memory_source", "gpu_mem_peak_bytes", "torch_peak_allocated_bytes",
    "energy_j", "energy_method", "power_mean_w",
)
SMALL_N = 30  # below this many answers per cell, deltas are mostly noise: the table says so


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json plus the three row files as DataFrames (answers carry eval_reward from eval calls)."""
    import pandas as pd

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    calls = pd.DataFrame(list(read_jsonl(run_dir / CALLS)))
    answers = pd.DataFrame(list(read_jsonl(run_dir / ANSWERS)))
    cell_rows = list(read_jsonl(run_dir / CELLS))
    # The last record of a unit (cell x load level x cell repeat) wins: a failed unit later
    # resumed and finished.
    last: dict[tuple, dict] = {}
    for r in cell_rows:
        r.setdefault("load", "batch")
        r.setdefault("cell_repeat", 0)
        last[(r["cell"], r["load"], int(r["cell_repeat"]))] = r
    cells = pd.DataFrame(list(last.values()))
    for frame in (calls, answers):
        if not frame.empty:
            if "load" not in frame:
                frame["load"] = "batch"
            if "cell_repeat" not in frame:
                frame["cell_repeat"] = 0
            frame["load"] = frame["load"].fillna("batch")
            frame["cell_repeat"] = frame["cell_repeat"].fillna(0).astype(int)
    if not answers.empty:
        answers = answers.drop_duplicates("answer_id", keep="last")
        if not calls.empty and "session" in calls and "session" in answers:
            # A run killed mid-cell leaves calls of answers it never finished; the resumed
            # session redoes those answers. Keep only calls from the session that wrote the answer.
            owner = dict(zip(answers["answer_id"], answers["session"]))
            keep = [owner.get(a, "\0missing") == s for a, s in zip(calls["answer_id"], calls["session"])]
            calls = calls[keep]
        answers["eval_reward"] = None
        if not calls.empty and "stage" in calls:
            ev = calls[calls["stage"] == "eval"]
            if not ev.empty:
                rew = {r["answer_id"]: (r.get("extra") or {}).get("rewards", [None])[0] for _, r in ev.iterrows()}
                answers["eval_reward"] = answers["answer_id"].map(rew)
    # scores.jsonl: per-answer evaluations by the sources' declared scorers; the row of the
    # session that wrote the answer wins (a resumed run rescored what it redid)
    owner = dict(zip(answers["answer_id"], answers["session"])) if (not answers.empty and "session" in answers) else {}
    scores: dict[str, dict] = {}
    for r in read_jsonl(run_dir / SCORES):
        if not owner or owner.get(r.get("answer_id")) == r.get("session"):
            r.setdefault("load", "batch")
            r.setdefault("cell_repeat", 0)
            scores[r["answer_id"]] = r
    return {"meta": meta, "calls": calls, "answers": answers, "cells": cells, "scores": list(scores.values())}


def _extra(answers, key):
    return [(e or {}).get(key) for e in answers["extra"]] if "extra" in answers else []


def _cell_quality(a, prompts_answer: dict[str, str | None]) -> dict[str, Any]:
    texts = list(a["text"])
    out: dict[str, Any] = {}
    sel = [x for x in a.get("selection_reward", []) if x is not None]
    out["selection_reward_mean"] = M.mean_or_none(sel)
    ev = [x for x in a["eval_reward"] if x is not None and x == x] if "eval_reward" in a else []
    out["eval_reward_mean"] = M.mean_or_none(ev)
    ci = M.bootstrap_ci(ev) if ev else None
    out["eval_reward_ci95_lo"], out["eval_reward_ci95_hi"] = ci if ci else (None, None)
    out["eval_reward_n"] = len(ev)
    # accuracy on prompts with an answer (the arith set)
    graded = [(t, prompts_answer.get(pid)) for t, pid in zip(texts, a["prompt_id"]) if prompts_answer.get(pid) is not None]
    correct = [is_correct(t, ans) for t, ans in graded]
    out["accuracy"] = (sum(correct) / len(correct)) if correct else None
    out["accuracy_n"] = len(correct)
    ci = M.bootstrap_ci([float(c) for c in correct]) if correct else None
    out["accuracy_ci95_lo"], out["accuracy_ci95_hi"] = ci if ci else (None, None)
    # refusal on the harmful set
    harm = [t for t, s in zip(texts, a.get("prompt_set", [None] * len(texts))) if s == "harmful"]
    out["refusal_rate_harmful"] = (sum(is_refusal(t) for t in harm) / len(harm)) if harm else None
    out["refusal_n"] = len(harm)
    # output narrowing across the cell's final answers
    out["distinct_1"] = distinct_n(texts, 1)
    out["distinct_2"] = distinct_n(texts, 2)
    out["self_bleu"] = _bleu(texts)
    # over BoN's N candidates (mean over prompts)
    cands = [c for c in _extra(a, "candidate_texts") if c]
    if cands:
        out["candidate_distinct_2"] = M.mean_or_none([distinct_n(c, 2) for c in cands])
        out["candidate_self_bleu"] = M.mean_or_none([_bleu(c) for c in cands])
    else:
        out["candidate_distinct_2"] = out["candidate_self_bleu"] = None
    # over --repeats K final answers per prompt (null when K=1)
    if "repeat" in a and a["repeat"].nunique() > 1:
        groups = a.groupby("prompt_id")["text"].apply(list)
        out["repeats_self_bleu"] = M.mean_or_none([_bleu(g) for g in groups])
        out["repeats_distinct_2"] = M.mean_or_none([distinct_n(g, 2) for g in groups])
    else:
        out["repeats_self_bleu"] = out["repeats_distinct_2"] = None
    out["truncated_rate"] = float(a["truncated"].mean()) if "truncated" in a and len(a) else None
    # Reward over-optimisation's classic direction: reward growing with length. Final answers'
    # evaluation reward vs their length in words; BoN candidates' selection rewards vs theirs.
    ev_pairs = [(r, len(str(t).split())) for r, t in zip(a["eval_reward"], texts) if r is not None and r == r] if "eval_reward" in a else []
    rho, n = M.reward_length_correlation([r for r, _ in ev_pairs], [w for _, w in ev_pairs])
    out["reward_length_rho"], out["reward_length_n"] = rho, n
    out["reward_length_strong"] = M.reward_length_strong(rho, n)
    cand_r, cand_w = [], []
    for rewards, ctexts in zip(_extra(a, "candidate_rewards"), _extra(a, "candidate_texts")):
        if rewards and ctexts and len(rewards) == len(ctexts):
            cand_r.extend(rewards)
            cand_w.extend(len(str(t).split()) for t in ctexts)
    crho, cn = M.reward_length_correlation(cand_r, cand_w) if cand_r else (None, 0)
    out["candidate_reward_length_rho"] = crho
    out["candidate_reward_length_strong"] = M.reward_length_strong(crho, cn)
    return out


def _bleu(texts):
    """self-BLEU, or None with a warning where sacrebleu is not installed (a bare GPU image)."""
    try:
        return self_bleu(texts)
    except ImportError as exc:
        import warnings

        warnings.warn(f"self_bleu columns are null: {exc}", RuntimeWarning)
        return None


def _cell_cost(a, c, cell_row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = len(a)
    lat = list(a["latency_s"]) if n else []
    p = M.percentiles(lat)
    out["latency_p50_s"], out["latency_p95_s"], out["latency_p99_s"] = p["p50"], p["p95"], p["p99"]
    out["latency_mean_s"] = M.mean_or_none(lat)
    ci = M.bootstrap_ci(lat, stat="median") if lat else None
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
    computed = [(e or {}).get("reward_tokens_computed") for e in score["extra"]] if len(score) and "extra" in score else []
    computed = [x for x in computed if isinstance(x, (int, float))]
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
COLD_FACTOR = 3.0  # a first repeat / first engine batch slower than 3x the median of the others is cold


def _unit_key(r) -> tuple[str, str]:
    return (r["cell"], r.get("load", "batch") or "batch")


def build_summary(run_dir: str | Path):
    """One row per (cell x load level): contract columns first, then cost, load, quality,
    technique, steady-state checks, tax and provenance."""
    import pandas as pd

    data = load_run(run_dir)
    meta, calls, answers, cells = data["meta"], data["calls"], data["answers"], data["cells"]
    if cells.empty:
        return pd.DataFrame(columns=CONTRACT_COLUMNS)
    prompts_answer = _prompt_answers(meta)
    slo = (meta.get("config") or {}).get("slo_p95_s")
    groups: dict[tuple[str, str], list[dict]] = {}
    for _, cr in cells.iterrows():
        groups.setdefault(_unit_key(cr), []).append(cr.to_dict())
    rows = []
    for (cell, load), units in groups.items():
        units.sort(key=lambda u: int(u.get("cell_repeat", 0)))
        cr = units[-1]
        ok_units = [u for u in units if u.get("status") == "ok"]
        in_group = lambda f: (f["cell"] == cell) & (f["load"] == load)  # noqa: E731
        a = answers[in_group(answers)] if not answers.empty else answers
        c = calls[in_group(calls)] if not calls.empty else calls
        failed = [u for u in units if u.get("status") != "ok"]
        row: dict[str, Any] = {
            "run_id": meta["run_id"],
            "cell": cell,
            "technique": cr["technique"],
            "params": json.dumps(cr.get("params") or {}, sort_keys=True),
            "answers": int(len(a)),
            "status": "ok" if not failed else "failed",
            "error": failed[-1].get("error") if failed else None,
            "is_baseline": bool(cr.get("is_baseline")),
            "engine_start_s": cr.get("engine_start_s"),
            "load": load,
        }
        per_unit = []
        for u in ok_units or units:
            k = int(u.get("cell_repeat", 0))
            ua = a[a["cell_repeat"] == k] if len(a) else a
            uc = c[c["cell_repeat"] == k] if len(c) else c
            m = _cell_cost(ua, uc, u) if len(ua) else {"cell_wall_s": u.get("cell_wall_s")}
            m.update(_load_metrics(ua, uc, u, slo))
            m["_latencies"] = list(ua["latency_s"]) if len(ua) else []
            m["_unit"] = u
            m["_calls"] = uc
            per_unit.append(m)
        if len(a):
            pooled = _cell_cost(a, c, {**cr, "cell_wall_s": sum(u.get("cell_wall_s") or 0 for u in ok_units) or cr.get("cell_wall_s"), "resumed_answers": sum(int(u.get("resumed_answers") or 0) for u in ok_units),
                                       "score_batches": [b for u in ok_units for b in (u.get("score_batches") or [])]})
            pooled.update(_load_metrics(a, c, cr, slo))
            row.update(pooled)
            row.update(_cell_quality(a, prompts_answer))
        else:
            row["cell_wall_s"] = cr.get("cell_wall_s")
        row.update(_repeat_aggregate(per_unit))
        # contention: the worst repeat speaks for the row (a median would hide one disturbed repeat)
        shares = [m["foreign_cpu_share"] for m in per_unit if isinstance(m.get("foreign_cpu_share"), (int, float))]
        row["foreign_cpu_share"] = max(shares) if shares else None
        row.update(_cold_start(per_unit))
        row.update(_technique_summary(cr, a, prompts_answer))
        evals = [e for e in data["scores"] if e["cell"] == cell and e["load"] == load]
        if evals:
            row.update(summarize_scored_answers(evals))
            if cell != "plain":
                base = [e for e in data["scores"] if e["cell"] == "plain" and e["load"] == load]
                if base:
                    row.update(scored_deltas(base, evals))
        rows.append(row)
    df = pd.DataFrame(rows)
    df = _add_tax(df, answers, meta)
    df = _add_checks(df, answers, calls, meta)
    df = _add_provenance(df, meta)
    df = _add_params(df, cells)
    cols = CONTRACT_COLUMNS + [c for c in df.columns if c not in CONTRACT_COLUMNS]
    for c in CONTRACT_COLUMNS:
        if c not in df:
            df[c] = None
    return df[cols]


def _load_metrics(a, c, unit: dict, slo: float | None) -> dict[str, Any]:
    """Load-level columns of one unit (or pooled): achieved vs offered answers/s, saturation,
    queueing delay, TTFT of each answer's first call, goodput under the SLO."""
    ls = unit.get("load_stats") or {}
    if not isinstance(ls, dict):
        ls = {}
    label = unit.get("load", "batch") or "batch"
    mode, _, value = label.partition("=")
    out: dict[str, Any] = {
        "load_mode": mode,
        "load_level": float(value) if value else None,
        "offered_answers_per_s": ls.get("offered_answers_per_s"),
        "achieved_answers_per_s": ls.get("achieved_answers_per_s"),
        "saturated": bool(ls.get("saturated")) if ls else None,
        "level_timed_out": bool(ls.get("timed_out")) if ls else None,
    }
    q = []
    if len(c) and "extra" in c:
        q = [(e or {}).get("queue_s") for e in c["extra"]]
        q = [x for x in q if isinstance(x, (int, float)) and x == x]
    out["queue_p50_s"] = M.percentiles(q)["p50"] if q else None
    out["queue_p95_s"] = M.percentiles(q)["p95"] if q else None
    ttft = [x for x in (a["ttft_s"] if len(a) and "ttft_s" in a else []) if x is not None and x == x]
    out["first_call_ttft_p50_s"] = M.percentiles(ttft)["p50"] if ttft else None
    if slo and len(a) and out["achieved_answers_per_s"]:
        good = sum(1 for x in a["latency_s"] if x <= slo) / len(a)
        out["goodput_answers_per_s"] = out["achieved_answers_per_s"] * good
    else:
        out["goodput_answers_per_s"] = None
    if len(c) and "extra" in c:
        waits = [(e or {}).get("score_wait_s") for e, st in zip(c["extra"], c["stage"]) if st == "score"]
        sizes = [(e or {}).get("score_batch_pairs") for e, st in zip(c["extra"], c["stage"]) if st == "score"]
        waits = [x for x in waits if isinstance(x, (int, float))]
        sizes = [x for x in sizes if isinstance(x, (int, float))]
        out["score_wait_p50_s"] = M.percentiles(waits)["p50"] if waits else None
        out["score_batch_pairs_mean"] = M.mean_or_none(sizes)
    return out


def _repeat_aggregate(per_unit: list[dict]) -> dict[str, Any]:
    """Median across cell repeats of the timing metrics, and their spread."""
    out: dict[str, Any] = {"cell_repeats": len(per_unit)}
    if len(per_unit) < 2:
        for m in SPREAD_METRICS:
            v = per_unit[0].get(m) if per_unit else None
            out[f"repeat_min_{m}"] = out[f"repeat_max_{m}"] = v
        return out
    import statistics

    for m in REPEAT_METRICS:
        vals = [u.get(m) for u in per_unit if isinstance(u.get(m), (int, float)) and u.get(m) == u.get(m)]
        if vals:
            out[m] = statistics.median(vals)
            if m in SPREAD_METRICS:
                out[f"repeat_min_{m}"], out[f"repeat_max_{m}"] = min(vals), max(vals)
    return out


def _batch_latencies(calls) -> list[float]:
    """Engine batches of a unit in order of submission: span of each batch's generation calls."""
    if not len(calls) or "batch_id" not in calls:
        return []
    gen = calls[calls["stage"].isin(list(GEN_STAGES)) & calls["batch_id"].notna()]
    spans = []
    for _, g in gen.groupby("batch_id", sort=False):
        spans.append((float(g["t_submit_s"].min()), float(g["t_finish_s"].max()) - float(g["t_submit_s"].min())))
    return [s for _, s in sorted(spans)]


def _cold_start(per_unit: list[dict]) -> dict[str, Any]:
    """cold_outlier: the first cell repeat, or the first engine batch of the first repeat, took
    more than COLD_FACTOR x the median of the others (one-off start-up cost left in the numbers)."""
    import statistics

    reasons = []
    p50s = [u.get("latency_p50_s") for u in per_unit]
    if len(p50s) >= 2 and all(isinstance(x, (int, float)) for x in p50s):
        rest = statistics.median(p50s[1:])
        if rest > 0 and p50s[0] > COLD_FACTOR * rest:
            reasons.append(f"repeat 1 p50 {p50s[0]:.3g}s vs {rest:.3g}s for later repeats")
    if per_unit:
        spans = _batch_latencies(per_unit[0]["_calls"])
        if len(spans) >= 3:
            rest = statistics.median(spans[1:])
            if rest > 0 and spans[0] > COLD_FACTOR * rest:
                reasons.append(f"first engine batch {spans[0]:.3g}s vs median {rest:.3g}s of the others")
    return {"cold_outlier": bool(reasons), "cold_outlier_reason": "; ".join(reasons) or None}


def _technique_summary(cr: dict, a, prompts_answer) -> dict[str, Any]:
    """The technique's own summary columns, declared in its file."""
    from ..config import TechniqueSpec

    if not len(a):
        return {}
    try:
        params = cr.get("params") or {}
        tech = TechniqueSpec(cr["technique"], tuple(params.items())).build()
    except Exception:  # a technique no longer registered: its own columns are left out
        return {}
    return tech.summary(a.to_dict("records"), prompts_answer)


def _prompt_answers(meta) -> dict[str, str | None]:
    """Reference answers come from the prompt sources named in run.json (loaded again, cheap),
    cut to the counts the run recorded (prompts.sources; older runs: the config's limit)."""
    from ..prompts import select_prompts

    cfg = meta.get("config", {})
    try:
        counts = {s["source"]: int(s["used"]) for s in (meta.get("prompts") or {})["sources"]}
    except (KeyError, TypeError, ValueError):
        counts = None
    try:
        prompts, _ = select_prompts(cfg.get("prompts", []), limit=cfg.get("limit"), seed=cfg.get("seed", 0), counts=counts)
    except Exception:
        return {}
    return {p.id: p.answer for p in prompts}


def _add_tax(df, answers, meta):
    """Multipliers and quality deltas vs the plain baseline at the same load level on the same
    prompts; Pareto flag."""
    import pandas as pd

    if answers.empty or "plain" not in set(df["cell"]):
        return df
    parts = [_add_tax_level(g.copy(), answers[answers["load"] == load], meta) for load, g in df.groupby("load", sort=False)]
    return pd.concat(parts).loc[df.index]


def _add_tax_level(df, answers, meta):
    base = df[df["cell"] == "plain"]
    if base.empty or answers.empty:
        return df
    b = base.iloc[0]
    mult_cols = {
        "latency_p50_x": "latency_p50_s",
        "latency_p95_x": "latency_p95_s",
        "cpu_s_per_answer_x": "cpu_s_per_answer",
        "gpu_s_per_answer_x": "gpu_s_per_answer",
        "output_tokens_per_answer_x": "output_tokens_per_answer",
        "energy_j_per_answer_x": "energy_j_per_answer",
        "peak_memory_x": "peak_memory_bytes",
    }
    for new, col in mult_cols.items():
        df[new] = [M.multiplier(v, b.get(col)) if col in df else None for v in (df[col] if col in df else [None] * len(df))]
    source = (meta.get("eval_reward") or {}).get("source")
    base_ans = answers[answers["cell"] == "plain"]
    key = lambda r: (r["prompt_id"], r.get("repeat", 0), r.get("cell_repeat", 0))  # noqa: E731
    base_eval = {key(r): r["eval_reward"] for _, r in base_ans.iterrows()} if "eval_reward" in base_ans else {}
    win, proxy_win, win_n, deltas, dlo, dhi, acc_d, wlo, whi = [], [], [], [], [], [], [], [], []
    for _, row in df.iterrows():
        a = answers[answers["cell"] == row["cell"]]
        cand = {key(r): r["eval_reward"] for _, r in a.iterrows()} if "eval_reward" in a else {}
        rate, n = M.win_rate(cand, base_eval)
        win.append(rate if source == "eval" else None)
        proxy_win.append(rate if source == "proxy" else None)
        win_n.append(n)
        shared = [k for k in cand if k in base_eval and cand[k] is not None and base_eval[k] is not None]
        diffs_a = [cand[k] for k in shared]
        diffs_b = [base_eval[k] for k in shared]
        deltas.append(M.mean_or_none([x - y for x, y in zip(diffs_a, diffs_b)]))
        # win-rate CI: bootstrap over prompts of the per-pair outcome (1 win, 0.5 tie, 0 loss)
        outcomes = [1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(diffs_a, diffs_b)]
        wci = M.bootstrap_ci(outcomes) if outcomes else None
        wlo.append(wci[0] if wci else None)
        whi.append(wci[1] if wci else None)
        ci = M.paired_bootstrap_delta_ci(diffs_a, diffs_b) if shared else None
        dlo.append(ci[0] if ci else None)
        dhi.append(ci[1] if ci else None)
        acc = row.get("accuracy")
        acc_d.append(None if acc is None or b.get("accuracy") is None or acc != acc else acc - b.get("accuracy"))
    df["win_rate_vs_plain"] = win
    df["proxy_win_rate_vs_plain"] = proxy_win
    df["win_rate_n"] = win_n
    df["win_rate_ci95_lo"] = wlo
    df["win_rate_ci95_hi"] = whi
    df["eval_reward_delta_vs_plain"] = deltas
    df["eval_reward_delta_ci95_lo"] = dlo
    df["eval_reward_delta_ci95_hi"] = dhi
    df["accuracy_delta_vs_plain"] = acc_d
    df["eval_reward_source"] = source
    cost_col = "gpu_s_per_answer" if df.get("gpu_s_per_answer") is not None and df["gpu_s_per_answer"].notna().all() else "latency_p50_s"
    ok = df["status"] == "ok"
    costs = [c if o else None for c, o in zip(df[cost_col], ok)]
    quals = [q if o else None for q, o in zip(df.get("eval_reward_mean", [None] * len(df)), ok)]
    df["pareto"] = M.pareto_front(costs, quals)
    df["pareto_cost"] = cost_col
    df["noise_note"] = [
        f"n={n} < {SMALL_N}: deltas are mostly noise" if n < SMALL_N else "" for n in df["answers"]
    ]
    return df


SANITY_FLAGS = {
    "flag_cheaper_than_plain": "generated >= 2x plain's tokens per answer at the same load, yet lower latency or energy per answer than plain",
    "flag_nonpositive_duration": "a zero or negative duration (answer latency, call latency or cell wall time)",
    "flag_cached_exceeds_prompt": "a call reports more cached prompt tokens than prompt tokens served",
    "flag_energy_below_idle": "energy per answer below idle power x wall time / answers",
}
AA_Z = 1.96  # consecutive plain repeats agree when their medians differ by less than the 95% band
# ... or by less than this fraction of their mean: a floor for timer/scheduler jitter, which the
# within-repeat spread cannot see when every answer of a batch finishes at the same moment.
AA_FLOOR_REL = 0.05


def _add_checks(df, answers, calls, meta):
    """Sanity flags on every row, and the plain-vs-plain A/A check on the plain rows."""
    flags = {k: [] for k in SANITY_FLAGS}
    idle = ((meta.get("idle_power_w") or {}).get("power_w")) if isinstance(meta.get("idle_power_w"), dict) else None
    for _, row in df.iterrows():
        in_group = lambda f: (f["cell"] == row["cell"]) & (f["load"] == row["load"])  # noqa: E731
        a = answers[in_group(answers)] if not answers.empty else answers
        c = calls[in_group(calls)] if not calls.empty else calls
        base = df[(df["cell"] == "plain") & (df["load"] == row["load"])]
        b = base.iloc[0] if len(base) else None
        cheaper = False
        if b is not None and row["cell"] != "plain" and _num(row.get("output_tokens_per_answer")) and _num(b.get("output_tokens_per_answer")):
            if row["output_tokens_per_answer"] >= 2 * b["output_tokens_per_answer"]:
                for col in ("latency_p50_s", "energy_j_per_answer"):
                    if _num(row.get(col)) and _num(b.get(col)) and row[col] < b[col]:
                        cheaper = True
        flags["flag_cheaper_than_plain"].append(cheaper)
        nonpos = bool(len(a) and (a["latency_s"] <= 0).any())
        if len(c):
            tech = c[c["stage"] != "eval"]
            nonpos = nonpos or bool((tech["latency_s"] < 0).any())
        wall = row.get("cell_wall_s")
        # a failed cell's wall time is 0 by construction (nothing was measured): not a sanity fault
        nonpos = nonpos or (row.get("status") == "ok" and wall is not None and wall == wall and wall <= 0)
        flags["flag_nonpositive_duration"].append(bool(nonpos))
        over = False
        if len(c) and "cached_prompt_tokens" in c:
            gen = c[c["stage"].isin(list(GEN_STAGES))]
            cp = gen["cached_prompt_tokens"]
            served = gen["prompt_tokens"] * gen["n"]
            over = bool(((cp.notna()) & (cp > served)).any())
        flags["flag_cached_exceeds_prompt"].append(over)
        below = False
        if idle and _num(row.get("energy_j_per_answer")) and _num(wall) and row.get("answers"):
            below = row["energy_j_per_answer"] < idle * wall / row["answers"] * 0.999
        flags["flag_energy_below_idle"].append(bool(below))
    for k, v in flags.items():
        df[k] = v
    df["sanity_flags"] = [";".join(k[len("flag_"):] for k in SANITY_FLAGS if df.loc[i, k]) or None for i in df.index]
    acc = [_accounting(row, answers, calls) for _, row in df.iterrows()]
    df["accounting_violations"] = [n for n, _ in acc]
    df["accounting_example"] = [ex for _, ex in acc]
    aa = {i: _aa_check(answers, calls, row["load"]) if row["cell"] == "plain" else {} for i, row in df.iterrows()}
    for col in ("aa_pairs", "aa_max_rel_diff", "aa_noise_band_rel", "aa_ok", "aa_metric"):
        df[col] = [aa[i].get(col) for i in df.index]
    return df


def _accounting(row, answers, calls) -> tuple[int | None, str | None]:
    """The technique's own accounting checks (declared in its file) over the row's answers."""
    from ..config import TechniqueSpec

    if answers.empty:
        return None, None
    try:
        tech = TechniqueSpec(row["technique"], tuple(json.loads(row["params"]).items())).build()
    except Exception:
        return None, None
    a = answers[(answers["cell"] == row["cell"]) & (answers["load"] == row["load"])]
    c = calls[(calls["cell"] == row["cell"]) & (calls["load"] == row["load"])] if not calls.empty else calls
    by_answer: dict[str, list] = {}
    for rec in c.to_dict("records") if len(c) else []:
        by_answer.setdefault(rec["answer_id"], []).append(rec)
    problems = []
    for rec in a.to_dict("records"):
        problems.extend(tech.check(rec, by_answer.get(rec["answer_id"], [])))
    return len(problems), (problems[0] if problems else None)


def _aa_samples(answers, calls, load: str) -> dict[str, dict[int, list[float]]]:
    """Per plain repeat, the values the A/A check compares.

    An answer's latency is about TTFT + TPOT x (its tokens - 1). Repeats sample independently, so
    at temperature > 0 they generate different amounts of text: measured on the embedded model,
    three quiet plain repeats of 16 arith prompts made 634, 471 and 429 tokens and their median
    latencies were 3.34, 2.15 and 1.79 s (a false "drift"), while TPOT held (53, 59, 54 ms,
    inside the band). TPOT, averaged over many decode steps per answer, is what a drifting
    machine moves and sampled lengths do not, so it is compared where the engine reports
    per-request TTFT; median latency otherwise. TTFT itself is not compared: in an offline batch
    it is one prefill event per repeat (1.11, 1.01, 1.01 s there), which no within-repeat spread
    can put a noise band on."""
    plain_c = calls[(calls["cell"] == "plain") & (calls["load"] == load) & (calls["stage"] == "sample")] if len(calls) else calls
    out: dict[str, dict[int, list[float]]] = {"tpot_s": {}}
    if len(plain_c) and "ttft_s" in plain_c:
        for _, r in plain_c.iterrows():
            k = int(r.get("cell_repeat") or 0)
            ttft = r["ttft_s"]
            per_sample = r["output_tokens"] / max(int(r["n"] or 1), 1)
            if ttft is None or ttft != ttft or per_sample <= 1:
                continue
            out["tpot_s"].setdefault(k, []).append((float(r["latency_s"]) - float(ttft)) / (per_sample - 1))
    plain_a = answers[(answers["cell"] == "plain") & (answers["load"] == load)] if len(answers) else answers
    reps = sorted(plain_a["cell_repeat"].unique()) if len(plain_a) else []
    usable = {m: v for m, v in out.items() if len(v) == len(reps) and all(len(x) >= 2 for x in v.values())}
    if usable:
        return usable
    return {"latency_s": {int(k): list(plain_a[plain_a["cell_repeat"] == k]["latency_s"]) for k in reps}}


def _aa_check(answers, calls, load: str) -> dict[str, Any]:
    """Plain repeat k vs k+1: the medians of each compared metric (_aa_samples) must differ by
    less than the noise band the run itself measures, AA_Z x the combined standard error of the
    two medians (bootstrap CIs of each repeat's median, half-width / 1.96 as the standard
    error), never below AA_FLOOR_REL of their mean. `aa_metric` names the metric of the worst pair."""
    if answers.empty:
        return {}
    per_metric = _aa_samples(answers, calls, load)
    worst_rel, worst_band, worst_metric, worst_ratio, ok, pairs = 0.0, 0.0, None, -1.0, True, 0
    for metric, by_rep in per_metric.items():
        reps = sorted(by_rep)
        if len(reps) < 2:
            return {}
        stats = []
        for k in reps:
            vals = by_rep[k]
            med = M.percentiles(vals)["p50"]
            ci = M.bootstrap_ci(vals, stat="median") if len(vals) >= 2 else None
            se = ((ci[1] - ci[0]) / 2 / 1.96) if ci else 0.0
            stats.append((med, se))
        pairs = len(stats) - 1
        for (m1, s1), (m2, s2) in zip(stats, stats[1:]):
            ref = (m1 + m2) / 2 or 1e-12
            diff = abs(m1 - m2)
            band = max(AA_Z * (s1 * s1 + s2 * s2) ** 0.5, AA_FLOOR_REL * abs(ref))
            if diff / band > worst_ratio:  # the pair furthest beyond (or closest to) its own band
                worst_rel, worst_band, worst_metric, worst_ratio = diff / abs(ref), band / abs(ref), metric, diff / band
            ok = ok and diff <= band
    return {"aa_pairs": pairs, "aa_max_rel_diff": worst_rel, "aa_noise_band_rel": worst_band, "aa_ok": ok, "aa_metric": worst_metric}


PROVENANCE_COLUMNS = {  # summary column -> (run.json section, key)
    "model": ("cfg", "model"),
    "dtype": ("eng", "dtype"),
    "seed": ("cfg", "seed"),
    "temperature": ("cfg", "temperature"),
    "top_p": ("cfg", "top_p"),
    "max_tokens": ("cfg", "max_tokens"),
    "prefix_caching": ("eng", "prefix_caching"),
    "torch_version": ("vers", "torch"),
    "vllm_version": ("vers", "vllm"),
    "transformers_version": ("vers", "transformers"),
    "triton_version": ("vers", "triton"),
}


def _add_provenance(df, meta):
    prov = meta.get("provenance", {})
    eng = meta.get("engine", {})
    vers = prov.get("versions", {})
    cfg = meta.get("config", {})
    sources = {"cfg": cfg, "eng": eng, "vers": vers}
    df["device"] = prov.get("machine", {}).get("device")
    df["engine"] = eng.get("engine", cfg.get("engine"))
    for col, (src, key) in PROVENANCE_COLUMNS.items():
        df[col] = sources[src].get(key)
    df["git_commit"] = prov.get("git_commit")
    df["reward_model"] = (meta.get("reward_model") or {}).get("spec")
    return df


def _add_params(df, cells):
    """`param_<name>` per declared technique parameter: the cell's value (its declared default when
    the record lacks it), empty for cells whose technique does not take that parameter."""
    from ..techniques import REGISTRY

    recorded = {r["cell"]: (r.get("params") or {}) for _, r in cells.iterrows()}
    for col in param_columns():
        name = col.name[len(PARAM_PREFIX):]
        values = []
        for cell, tech in zip(df["cell"], df["technique"]):
            declared = {p.name: p for p in getattr(REGISTRY.get(tech), "params", ())}
            if name not in declared:
                values.append(None)
            else:
                values.append(recorded.get(cell, {}).get(name, declared[name].default))
        df[col.name] = values
    return df


def write_summary(run_dir: str | Path):
    """Rebuild summary.csv (atomically) from the run directory; returns the DataFrame."""
    import os

    run_dir = Path(run_dir)
    df = build_summary(run_dir)
    tmp = run_dir / f".{SUMMARY}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, run_dir / SUMMARY)
    return df


def load_summary(run_dir: str | Path):
    import pandas as pd

    return pd.read_csv(Path(run_dir) / SUMMARY)


def ensure_summary(run_dir: str | Path):
    """summary.csv as the run wrote it; built (and written) only when the run never wrote one
    (it crashed before its first cell ended)."""
    if (Path(run_dir) / SUMMARY).is_file():
        return load_summary(run_dir)
    return write_summary(run_dir)
