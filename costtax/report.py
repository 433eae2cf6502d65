"""The only module that builds DataFrames. Reads a run directory and nothing else, so a crash, a
resume or a later `costtax report` all see the same data.

summary.csv columns (contract; new columns are appended, none renamed):
  run_id, cell, technique, params, answers, latency_p50_s, latency_p95_s, latency_p99_s,
  cell_wall_s, answers_per_s, output_tokens_per_s, output_tokens_per_answer, engine_start_s,
  then cost, quality, tax and provenance columns documented in README.md.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import metrics as M
from .records import ANSWERS, CALLS, CELLS, RUN_JSON, SUMMARY, read_jsonl

CONTRACT_COLUMNS = [
    "run_id", "cell", "technique", "params", "answers", "latency_p50_s", "latency_p95_s", "latency_p99_s",
    "cell_wall_s", "answers_per_s", "output_tokens_per_s", "output_tokens_per_answer", "engine_start_s",
]
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
    cols = CONTRACT_COLUMNS + [c for c in df.columns if c not in CONTRACT_COLUMNS]
    for c in CONTRACT_COLUMNS:
        if c not in df:
            df[c] = None
    return df[cols]


def _prompt_answers(meta) -> dict[str, str | None]:
    """Reference answers come from the prompt sources named in run.json (loaded again, cheap)."""
    from .prompts import load_prompts

    cfg = meta.get("config", {})
    try:
        prompts = load_prompts(cfg.get("prompts", []), limit=cfg.get("limit"), seed=cfg.get("seed", 0))
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


HEADLINE = [
    ("cell", "cell", None),
    ("answers", "n", "{:d}"),
    ("latency_p50_s", "p50 s", "{:.2f}"),
    ("latency_p50_x", "p50 ×", "{:.2f}"),
    ("latency_p95_x", "p95 ×", "{:.2f}"),
    ("output_tokens_per_answer_x", "tok/ans ×", "{:.2f}"),
    ("cpu_s_per_answer_x", "CPU-s ×", "{:.2f}"),
    ("gpu_s_per_answer_x", "GPU-s ×", "{:.2f}"),
    ("energy_j_per_answer_x", "J/ans ×", "{:.2f}"),
    ("peak_memory_x", "mem ×", "{:.2f}"),
    ("answers_per_s", "ans/s", "{:.2f}"),
    ("prefix_cache_hit_rate", "cache hit", "{:.0%}"),
    ("eval_reward_mean", "reward", "{:+.2f}"),
    ("eval_reward_delta_vs_plain", "Δreward", "{:+.2f}"),
    ("win_rate_vs_plain", "win", "{:.0%}"),
    ("proxy_win_rate_vs_plain", "win (proxy)", "{:.0%}"),
    ("accuracy_delta_vs_plain", "Δacc", "{:+.0%}"),
    ("distinct_2", "dist-2", "{:.2f}"),
    ("pareto", "pareto", None),
]


def headline_rows(df) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the tax table; columns that are null everywhere are dropped."""
    cols = [(k, h, f) for k, h, f in HEADLINE if k in df and df[k].notna().any()]
    rows = []
    for _, r in df.iterrows():
        cells = []
        for k, _, f in cols:
            v = r[k]
            if v is None or (isinstance(v, float) and v != v):
                cells.append("—")
            elif k == "pareto":
                cells.append("★" if bool(v) else "")
            elif f:
                try:
                    cells.append(f.format(int(v) if f == "{:d}" else float(v)))
                except (TypeError, ValueError):
                    cells.append(str(v))
            else:
                cells.append(str(v) + ("" if r.get("status", "ok") == "ok" else f" (FAILED: {r.get('error')})"))
        rows.append(cells)
    return [h for _, h, _ in cols], rows


# -- plots ---------------------------------------------------------------------------------------
def write_plots(run_dir: str | Path, df=None) -> list[Path]:
    """cost_quality.png (cost multiplier vs reward, Pareto front marked, 95% CIs) and
    latency.png (p50/p95 per cell). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    df = build_summary(run_dir) if df is None else df
    df = df[df["status"] == "ok"] if "status" in df else df
    written = []
    if df.empty:
        return written
    title = f"{df['model'].iloc[0] if 'model' in df else ''} on {df['device'].iloc[0] if 'device' in df else ''}"

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xcol = "latency_p50_x" if "latency_p50_x" in df and df["latency_p50_x"].notna().any() else "latency_p50_s"
    ycol = "eval_reward_mean"
    if ycol in df and df[ycol].notna().any():
        for _, r in df.iterrows():
            x, y = r.get(xcol), r.get(ycol)
            if x is None or y is None or x != x or y != y:
                continue
            lo, hi = r.get("eval_reward_ci95_lo"), r.get("eval_reward_ci95_hi")
            yerr = None
            if lo is not None and hi is not None and lo == lo and hi == hi:
                yerr = [[max(y - lo, 0)], [max(hi - y, 0)]]
            star = bool(r.get("pareto"))
            ax.errorbar([x], [y], yerr=yerr, fmt="*" if star else "o", ms=12 if star else 7, capsize=3,
                        color="tab:red" if star else "tab:blue")
            ax.annotate(r["cell"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        front = df[df.get("pareto", False) == True].sort_values(xcol)  # noqa: E712
        if len(front) > 1:
            ax.plot(front[xcol], front[ycol], "--", color="tab:red", lw=1, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        src = df["eval_reward_source"].iloc[0] if "eval_reward_source" in df else None
        ax.set_ylabel(f"mean reward of final answers ({'proxy: selection model' if src == 'proxy' else 'evaluation model'})")
    else:
        ax.text(0.5, 0.5, "no reward recorded (--eval-reward-model none)", ha="center", transform=ax.transAxes)
    ax.set_xlabel("latency p50 × plain" if xcol == "latency_p50_x" else "latency p50 (s)")
    n = int(df["answers"].min()) if "answers" in df else 0
    ax.set_title(f"Cost vs quality — {title}\nerror bars: bootstrap 95% CI, n={n} answers per cell", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = run_dir / "cost_quality.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(df)))
    ypos = list(range(len(df)))[::-1]
    ax.barh([y + 0.2 for y in ypos], df["latency_p50_s"].fillna(0), height=0.4, label="p50", color="tab:blue")
    ax.barh([y - 0.2 for y in ypos], df["latency_p95_s"].fillna(0), height=0.4, label="p95", color="tab:orange")
    if "score_latency_s_per_answer" in df:
        ax.barh([y + 0.2 for y in ypos], df["score_latency_s_per_answer"].fillna(0), height=0.4, label="of which reward scoring (mean)",
                color="tab:green", alpha=0.8)
    ax.set_yticks(ypos, df["cell"])
    ax.set_xlabel("end-to-end latency per final answer (s), offline batch")
    ax.set_title(f"Latency per answer — {title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    p = run_dir / "latency.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written


# -- capacity plan -------------------------------------------------------------------------------
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

    df = build_summary(run_dir)
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
