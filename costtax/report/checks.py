"""Checks on summary rows: sanity flags (impossible numbers), the technique's own accounting
checks, the plain-vs-plain A/A check across cell repeats, and the cold-start outlier flag."""
from __future__ import annotations

import json
import statistics
from typing import Any

from .. import stats as M
from ..store.records import GEN_STAGES
from ..metering.client_gauge import CLIENT_LAG_FLOOR_S, CLIENT_LAG_TTFT_SHARE
from ._values import is_num as _num
from .client import lag_share_of_ttft

COLD_FACTOR = 3.0  # a first repeat / first engine batch slower than 3x the median of the others is cold

SANITY_FLAGS = {
    "flag_cheaper_than_plain": "generated >= 2x plain's tokens per answer at the same load, yet lower latency or energy per answer than plain",
    "flag_nonpositive_duration": "a zero or negative duration (answer latency, call latency or cell wall time)",
    "flag_cached_exceeds_prompt": "a call reports more cached prompt tokens than prompt tokens served",
    "flag_energy_below_idle": "energy per answer below idle power x wall time / answers",
    "flag_client_lag": "the client's median event-loop lag is a visible share of the median TTFT it measured (client_lag_share_of_ttft >= CLIENT_LAG_TTFT_SHARE, and the lag above the idle loop's floor CLIENT_LAG_FLOOR_S): the client is part of the latency",
}
AA_Z = 1.96  # consecutive plain repeats agree when their medians differ by less than the 95% band
# ... or by less than this fraction of their mean: a floor for timer/scheduler jitter, which the
# within-repeat spread cannot see when every answer of a batch finishes at the same moment.
AA_FLOOR_REL = 0.05


def add_checks(df, answers, calls, meta):
    """Sanity flags on every row, and the plain-vs-plain A/A check on the plain rows."""
    flags = {k: [] for k in SANITY_FLAGS}
    lag_shares: list[float | None] = []
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
        share = lag_share_of_ttft(row)
        lag_shares.append(share)
        lag = row.get("client_lag_p50_s")
        flags["flag_client_lag"].append(share is not None and share >= CLIENT_LAG_TTFT_SHARE
                                        and _num(lag) and lag >= CLIENT_LAG_FLOOR_S)
    df["client_lag_share_of_ttft"] = lag_shares
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




def _batch_latencies(calls) -> list[float]:
    """Engine batches of a unit in order of submission: span of each batch's generation calls."""
    if not len(calls) or "batch_id" not in calls:
        return []
    gen = calls[calls["stage"].isin(list(GEN_STAGES)) & calls["batch_id"].notna()]
    spans = []
    for _, g in gen.groupby("batch_id", sort=False):
        spans.append((float(g["t_submit_s"].min()), float(g["t_finish_s"].max()) - float(g["t_submit_s"].min())))
    return [s for _, s in sorted(spans)]


def cold_start(per_unit: list[dict]) -> dict[str, Any]:
    """cold_outlier: the first cell repeat, or the first engine batch of the first repeat, took
    more than COLD_FACTOR x the median of the others (one-off start-up cost left in the numbers)."""

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


