"""Point estimates with 95% CIs, per (cell, load level) of a run directory or per benchmark of a
pytest-benchmark JSON file: what `costtax compare` judges and the plugin's assertions read.

Measurement choices:
- Latency per final answer (p50, p95) and answers/s, per (cell, load level), with intervals
  that respect how answers under load are correlated (costtax/load/blocks.py, timing_estimates):
  with two or more units at the level (cell repeats, search probes) the point is summary.csv's
  (median of the units' values) and the CI a t-interval over the units' values; with one unit a
  block bootstrap (closed loop: waves of C answers in admission order; open loop: windows of one
  median latency), none with fewer than 5 blocks; a batch unit is one block, so no CI. answers/s
  from blocks: ratio of resampled (answers, seconds added to the span) sums, scaled to the row's
  value. A pytest-benchmark round time gets the boxplot-notch CI of the median,
  median ± 1.58·IQR/√rounds (McGill, Tukey & Larsen 1978).
- Output tokens per answer: mean of the answers' output_tokens with a bootstrap CI over answers
  (each answer's length is its own draw; waves share time, not tokens).
- ×plain: the value is summary.csv's column (report/tax.py is the one definition); its CI is a
  bootstrap of the ratio over the cell's and plain's answers at the same level.
- Accuracy vs plain: paired on (prompt, repeat, cell repeat), graded against the reference
  answers the run recorded (RunData recovers them from the run's per-source counts).
- A summary-only directory (run.json + summary.csv, as the committed capacity runs) gives the
  summary's values: latency p50 with the summary's CI, the rest without one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import stats as M
from ..load.levels import BATCH, LoadLevel
from ..prompts.exact_match import is_correct
from ..store.rundata import RunData

NOTCH = 1.58  # boxplot notch: median ± 1.58·IQR/√n is a ~95% interval for the median


@dataclass(frozen=True)
class Estimate:
    """A point estimate with an optional 95% CI and the number of observations behind it.
    `ci_from` says what the CI resampled: "repeats" (a t-interval over cell repeats / probes),
    "blocks" (waves or time windows, costtax.load.blocks), "answers" (answers taken as independent:
    quality and token metrics), "summary" (summary.csv's columns); `units` the repeats behind
    the row and `unit_values` their per-repeat values (repeat-level statistics for compare)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    ci_from: str | None = None
    units: int | None = None
    unit_values: tuple[float, ...] | None = None

    @property
    def has_ci(self) -> bool:
        return self.lo is not None and self.hi is not None

    def to_json(self) -> dict[str, Any]:
        out = {"value": self.value, "ci95": [self.lo, self.hi] if self.has_ci else None, "n": self.n}
        if self.ci_from is not None:
            out["ci_from"] = self.ci_from
        if self.unit_values is not None:
            out["unit_values"] = list(self.unit_values)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Estimate":
        ci = d.get("ci95") or (None, None)
        uv = d.get("unit_values")
        uv = tuple(float(x) for x in uv) if isinstance(uv, list) and all(num(x) is not None for x in uv) else None
        return cls(num(d.get("value")), num(ci[0]), num(ci[1]), d.get("n"), d.get("ci_from"),
                   len(uv) if uv else None, uv)


def num(v) -> float | None:
    """A finite-or-inf float from a summary cell or JSON value; None for None, bools, NaN, text."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _int(v) -> int | None:
    f = num(v)
    return None if f is None else int(f)


def row_level(row: Mapping[str, Any]) -> LoadLevel:
    """The load level of a summary row (rows of runs before load levels: batch)."""
    label = row.get("load")
    return LoadLevel.from_label(label) if isinstance(label, str) and label else BATCH


def _ratio_ci(num_: list[float], den: list[float], stat: Callable, n_boot: int = 1000, seed: int = 0):
    """Bootstrap CI of stat(num) / stat(den), the two samples resampled independently (in chunks
    of bounded memory, stats.resample_with: the same draws as whole matrices)."""
    import numpy as np

    from ..stats import resample_with

    a = np.asarray([x for x in num_ if x is not None], dtype=float)
    b = np.asarray([x for x in den if x is not None], dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    rng = np.random.default_rng(seed)
    sa = resample_with(rng, a, stat, n_boot)
    sb = resample_with(rng, b, stat, n_boot)
    ok = sb > 0
    if not ok.any():
        return None
    lo, hi = np.percentile(sa[ok] / sb[ok], [2.5, 97.5])
    return float(lo), float(hi)


def _p(q):
    import numpy as np

    return lambda m: np.percentile(m, q, axis=1)


def _mean(m):
    return m.mean(axis=1)


def _correctness(rd: RunData, answers) -> dict[tuple, float]:
    """(prompt_id, repeat, cell_repeat) -> 1.0/0.0 for answers whose prompt has a reference answer."""
    ref = rd.reference_answers
    return {(a.prompt_id, a.repeat, a.cell_repeat): float(is_correct(a.text, ref[a.prompt_id]))
            for a in answers if ref.get(a.prompt_id) is not None}


def unit_estimates(rd: RunData, rows: list[Mapping[str, Any]]) -> dict[tuple[str, LoadLevel], dict[str, Estimate]]:
    """Every judged metric of every (cell, load level) row of summary.csv `rows`, with CIs where
    the run's answers allow, plus the ×plain ratios and Δ vs plain the plugin's assertions use."""
    by_key = {(r["cell"], row_level(r)): r for r in rows}
    answers: dict[tuple[str, LoadLevel], list] = {}
    for a in rd.answers:
        answers.setdefault((a.cell, a.load), []).append(a)
    out: dict[tuple[str, LoadLevel], dict[str, Estimate]] = {}
    for (cell, level), row in by_key.items():
        a = answers.get((cell, level), [])
        lat = [x for x in (num(x.latency_s) for x in a) if x is not None]
        tok = [float(x.output_tokens or 0) for x in a]
        e: dict[str, Estimate] = {}
        if a:
            e.update(timing_estimates(rd, cell, level, a, row))
            tci = M.bootstrap_ci(tok)
            e["output_tokens_per_answer"] = Estimate(M.mean_or_none(tok), *(tci or (None, None)), len(tok), "answers")
        else:  # summary-only directory
            n = _int(row.get("answers"))
            e["latency_p50_s"] = Estimate(num(row.get("latency_p50_s")), num(row.get("latency_p50_ci95_lo_s")),
                                          num(row.get("latency_p50_ci95_hi_s")), n, "summary")
            e["latency_p95_s"] = Estimate(num(row.get("latency_p95_s")), n=n)
            e["output_tokens_per_answer"] = Estimate(num(row.get("output_tokens_per_answer")), n=n)
            e["answers_per_s"] = Estimate(num(row.get("answers_per_s")), n=n)
        win_col = "win_rate_vs_plain" if num(row.get("win_rate_vs_plain")) is not None else "proxy_win_rate_vs_plain"
        e["win_rate_vs_plain"] = Estimate(
            num(row.get(win_col)), num(row.get("win_rate_ci95_lo")), num(row.get("win_rate_ci95_hi")), _int(row.get("win_rate_n"))
        )
        e["accuracy"] = Estimate(
            num(row.get("accuracy")), num(row.get("accuracy_ci95_lo")), num(row.get("accuracy_ci95_hi")), _int(row.get("accuracy_n"))
        )
        e["eval_reward_mean"] = Estimate(
            num(row.get("eval_reward_mean")), num(row.get("eval_reward_ci95_lo")), num(row.get("eval_reward_ci95_hi")),
            _int(row.get("eval_reward_n")),
        )
        e["peak_memory_bytes"] = Estimate(num(row.get("peak_memory_bytes")))
        e["energy_j_per_answer"] = Estimate(num(row.get("energy_j_per_answer")))
        e["cell_wall_s"] = Estimate(num(row.get("cell_wall_s")))
        base = answers.get(("plain", level))
        if base and ("plain", level) in by_key:
            e.update(_vs_plain(rd, row, a, base, lat, tok))
        out[(cell, level)] = e
    return out


def timing_estimates(rd: RunData, cell: str, level: LoadLevel, a, row) -> dict[str, Estimate]:
    """latency p50/p95 and answers/s of one (cell, level) with intervals that respect how its
    answers are correlated (costtax/load/blocks.py): with two or more units (cell repeats, probes) the
    point is summary.csv's (the median of the units' values) and the CI a t-interval over the
    units' values; with one unit the point is the pooled value and the CI a block bootstrap
    (waves in closed loop, time windows in open loop), none with fewer than MIN_BLOCKS blocks
    (a batch unit is one block)."""
    from ..load import blocks as B

    lat = [x for x in (num(x.latency_s) for x in a) if x is not None]
    by_unit: dict[tuple, list] = {}
    for x in a:
        by_unit.setdefault((x.cell_repeat, getattr(x, "probe", 0) or 0), []).append(x)
    out: dict[str, Estimate] = {}
    aps = num(row.get("answers_per_s"))
    conc = int(level.value) if level.mode == "concurrency" else None
    passes: dict[str, set] = {}
    for c in rd.calls:
        if c.stage == "score" and c.batch_id and c.cell == cell and c.load == level:
            passes.setdefault(c.answer_id, set()).add((c.cell_repeat, c.probe, c.batch_id))
    if len(by_unit) >= 2:
        walls = {(u.cell_repeat, getattr(u, "probe", 0) or 0): u for u in rd.units if u.cell == cell and u.load == level}
        for q, name in ((50, "latency_p50_s"), (95, "latency_p95_s")):
            vals = [M.percentiles([float(x.latency_s) for x in rows], (q,))[f"p{q}"] for rows in by_unit.values()]
            vals = [v for v in vals if v is not None]
            point = num(row.get(name))
            lo, hi, _ = B.latency_interval(a, level.mode, conc, q)  # "repeats": summary.csv's rule
            out[name] = Estimate(point if point is not None else M.percentiles(lat, (q,))[f"p{q}"],
                                 lo, hi, len(lat), "repeats", len(vals), tuple(vals))
        vals = []
        for k in by_unit:
            u = walls.get(k)
            if u is not None and u.cell_wall_s and u.status == "ok":
                vals.append(u.answers / u.cell_wall_s)
        out["answers_per_s"] = Estimate(aps, *(B.repeat_t_ci(vals) or (None, None)), len(a), "repeats",
                                        len(vals), tuple(vals) if vals else None)
        return out
    blocks = B.answer_blocks(a, level.mode, conc)
    if passes:
        blocks = B.merge_shared(blocks, passes)
    pc = M.percentiles(lat, (50, 95))
    for q, name in ((50, "latency_p50_s"), (95, "latency_p95_s")):
        # summary.csv's rule (blocks.latency_interval), except a batch: one block, no within-run CI
        lo, hi, _ = B.latency_interval(a, level.mode, conc, q, passes) if level.mode != BATCH.mode else (None, None, "")
        out[name] = Estimate(pc[f"p{q}"], lo, hi, len(lat), "blocks", 1)
    tput = B.throughput_blocks(blocks)
    ci = None
    if aps is not None and tput:
        own = sum(n for n, _ in tput) / max(sum(d for _, d in tput), 1e-12)
        rci = B.ratio_block_ci(tput)
        ci = (aps * rci[0] / own, aps * rci[1] / own) if rci and own > 0 else None
    out["answers_per_s"] = Estimate(aps, *(ci or (None, None)), len(a), "blocks", 1)
    return out


def _vs_plain(rd: RunData, row, a, base, lat, tok) -> dict[str, Estimate]:
    """×plain (summary.csv's values, report/tax.py) with ratio CIs, and paired Δ vs plain."""
    e: dict[str, Estimate] = {}
    blat = [x for x in (num(b.latency_s) for b in base) if x is not None]
    btok = [float(b.output_tokens or 0) for b in base]
    for q, name in ((50, "latency_p50_x"), (95, "latency_p95_x")):
        e[name] = Estimate(num(row.get(name)), *(_ratio_ci(lat, blat, _p(q)) or (None, None)), len(lat))
    e["output_tokens_per_answer_x"] = Estimate(num(row.get("output_tokens_per_answer_x")),
                                               *(_ratio_ci(tok, btok, _mean) or (None, None)), len(tok))
    cc, bc = _correctness(rd, a), _correctness(rd, base)
    keys = [k for k in cc if k in bc]
    if keys:
        dci = M.paired_bootstrap_delta_ci([cc[k] for k in keys], [bc[k] for k in keys])
        delta = M.mean_or_none([cc[k] - bc[k] for k in keys])
        e["accuracy_delta_vs_plain"] = Estimate(delta, *(dci or (None, None)), len(keys))
    else:
        e["accuracy_delta_vs_plain"] = Estimate(None, n=0)
    e["eval_reward_delta_vs_plain"] = Estimate(
        num(row.get("eval_reward_delta_vs_plain")), num(row.get("eval_reward_delta_ci95_lo")),
        num(row.get("eval_reward_delta_ci95_hi")), _int(row.get("win_rate_n")),
    )
    for name in ("peak_memory_x", "energy_j_per_answer_x"):
        e[name] = Estimate(num(row.get(name)))
    return e


def cell_estimates(run_dir: str | Path, load: LoadLevel | str | None = None) -> dict[str, dict[str, Estimate]]:
    """Estimates of every cell of a run directory at one load level (default: the run's first)."""
    from ..report import summary_records

    rd = RunData.open(run_dir)
    est = unit_estimates(rd, summary_records(rd.path))
    level = LoadLevel.from_label(load) if isinstance(load, str) else (load or rd.levels[0])
    return {cell: e for (cell, lvl), e in est.items() if lvl == level}


def benchmark_estimates(data: Mapping[str, Any]) -> dict[str, dict[str, Estimate]]:
    out: dict[str, dict[str, Estimate]] = {}
    for b in data.get("benchmarks", []):
        key = b.get("fullname") or b.get("name")
        if not key:
            continue
        e: dict[str, Estimate] = {}
        st = b.get("stats") or {}
        med, iqr, rounds = num(st.get("median")), num(st.get("iqr")), st.get("rounds")
        if med is not None:
            if iqr is not None and rounds and rounds >= 2:
                half = NOTCH * iqr / math.sqrt(rounds)
                e["round_time_median_s"] = Estimate(med, med - half, med + half, rounds)
            else:
                e["round_time_median_s"] = Estimate(med, n=rounds)
        ct = (b.get("extra_info") or {}).get("costtax")
        if isinstance(ct, dict):
            for name, d in (ct.get("metrics") or {}).items():
                if isinstance(d, dict):
                    e[name] = Estimate.from_json(d)
        out[key] = e
    return out


def flatten_for_extra_info(est: Mapping[str, Estimate]) -> dict[str, Any]:
    """The plugin's pytest-benchmark extra_info block: {metric: {value, ci95, n}}."""
    return {k: v.to_json() for k, v in est.items()}
