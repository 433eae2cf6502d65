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

from .. import metrics as M
from ..records import ANSWERS, CALLS, CELLS, RUN_JSON, SUMMARY, read_jsonl
from .columns import CONTRACT_COLUMNS, PARAM_PREFIX, param_columns

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
    # The last record of a cell wins (a failed cell later resumed and finished).
    last: dict[str, dict] = {}
    for r in cell_rows:
        last[r["cell"]] = r
    cells = pd.DataFrame(list(last.values()))
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
    return {"meta": meta, "calls": calls, "answers": answers, "cells": cells}


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
    correct = [M.is_correct(t, ans) for t, ans in graded]
    out["accuracy"] = (sum(correct) / len(correct)) if correct else None
    out["accuracy_n"] = len(correct)
    ci = M.bootstrap_ci([float(c) for c in correct]) if correct else None
    out["accuracy_ci95_lo"], out["accuracy_ci95_hi"] = ci if ci else (None, None)
    # refusal on the harmful set
    harm = [t for t, s in zip(texts, a.get("prompt_set", [None] * len(texts))) if s == "harmful"]
    out["refusal_rate_harmful"] = (sum(M.is_refusal(t) for t in harm) / len(harm)) if harm else None
    out["refusal_n"] = len(harm)
    # output narrowing across the cell's final answers
    out["distinct_1"] = M.distinct_n(texts, 1)
    out["distinct_2"] = M.distinct_n(texts, 2)
    out["self_bleu"] = _bleu(texts)
    # over BoN's N candidates (mean over prompts)
    cands = [c for c in _extra(a, "candidate_texts") if c]
    if cands:
        out["candidate_distinct_2"] = M.mean_or_none([M.distinct_n(c, 2) for c in cands])
        out["candidate_self_bleu"] = M.mean_or_none([_bleu(c) for c in cands])
    else:
        out["candidate_distinct_2"] = out["candidate_self_bleu"] = None
    # over --repeats K final answers per prompt (null when K=1)
    if "repeat" in a and a["repeat"].nunique() > 1:
        groups = a.groupby("prompt_id")["text"].apply(list)
        out["repeats_self_bleu"] = M.mean_or_none([_bleu(g) for g in groups])
        out["repeats_distinct_2"] = M.mean_or_none([M.distinct_n(g, 2) for g in groups])
    else:
        out["repeats_self_bleu"] = out["repeats_distinct_2"] = None
    out["truncated_rate"] = float(a["truncated"].mean()) if "truncated" in a and len(a) else None
    return out


def _bleu(texts):
    """self-BLEU, or None with a warning where sacrebleu is not installed (a bare GPU image)."""
    try:
        return M.self_bleu(texts)
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
    gen = tech[tech["stage"].isin(["sample", "critique", "revise"])] if len(tech) else tech
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
    score_s = float(score["latency_s"].sum()) if len(score) else 0.0
    out["score_latency_s_per_answer"] = (score_s / n) if n else None
    # Share of the cell's wall time spent in selection scoring (score calls run one prompt
    # group at a time, so this is the fraction of the batch's time the reward model held).
    out["score_share_of_wall"] = (score_s / wall) if wall else None
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
    return out


def build_summary(run_dir: str | Path):
    """One row per cell: contract columns first, then cost, quality, tax and provenance."""
    import pandas as pd

    data = load_run(run_dir)
    meta, calls, answers, cells = data["meta"], data["calls"], data["answers"], data["cells"]
    if cells.empty:
        return pd.DataFrame(columns=CONTRACT_COLUMNS)
    prompts_answer = _prompt_answers(meta)
    rows = []
    for _, cr in cells.iterrows():
        cell = cr["cell"]
        a = answers[answers["cell"] == cell] if not answers.empty else answers
        c = calls[calls["cell"] == cell] if not calls.empty else calls
        row: dict[str, Any] = {
            "run_id": meta["run_id"],
            "cell": cell,
            "technique": cr["technique"],
            "params": json.dumps(cr.get("params") or {}, sort_keys=True),
            "answers": int(len(a)),
            "status": cr["status"],
            "error": cr.get("error"),
            "is_baseline": bool(cr.get("is_baseline")),
            "engine_start_s": cr.get("engine_start_s"),
        }
        row.update(_cell_cost(a, c, cr) if len(a) else {"cell_wall_s": cr.get("cell_wall_s")})
        if len(a):
            row.update(_cell_quality(a, prompts_answer))
        params = cr.get("params") or {}
        if cr["technique"] == "bon":
            n = int(params.get("n", 1))
            row["bon_kl_bound_nats"] = M.bon_kl_bound_nats(n)
            row["bon_win_rate_bound"] = M.bon_win_rate_bound(n)
        if cr["technique"] == "cai" and len(a):
            row["cai_rounds_mean"] = M.mean_or_none(_extra(a, "rounds"))
            stopped = [bool(x) for x in _extra(a, "stopped_early") if x is not None]
            row["cai_stopped_early_rate"] = (sum(stopped) / len(stopped)) if stopped else None
            row.update(_cai_capability(a, prompts_answer))
        rows.append(row)
    df = pd.DataFrame(rows)
    df = _add_tax(df, answers, meta)
    df = _add_provenance(df, meta)
    df = _add_params(df, cells)
    cols = CONTRACT_COLUMNS + [c for c in df.columns if c not in CONTRACT_COLUMNS]
    for c in CONTRACT_COLUMNS:
        if c not in df:
            df[c] = None
    return df[cols]


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


def _cai_capability(a, prompts_answer) -> dict[str, Any]:
    """What revision did to answers that had a reference: correct->wrong and wrong->correct."""
    init = _extra(a, "initial_text")
    pairs = [
        (M.is_correct(i, prompts_answer[pid]), M.is_correct(t, prompts_answer[pid]))
        for i, t, pid in zip(init, a["text"], a["prompt_id"])
        if i is not None and prompts_answer.get(pid) is not None
    ]
    if not pairs:
        return {"cai_correct_to_wrong": None, "cai_wrong_to_correct": None}
    return {
        "cai_correct_to_wrong": sum(1 for b, f in pairs if b and not f) / len(pairs),
        "cai_wrong_to_correct": sum(1 for b, f in pairs if not b and f) / len(pairs),
    }


def _add_tax(df, answers, meta):
    """Multipliers and quality deltas vs the plain baseline on the same prompts; Pareto flag."""
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
    key = lambda r: (r["prompt_id"], r.get("repeat", 0))  # noqa: E731
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
