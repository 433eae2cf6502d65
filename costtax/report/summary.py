"""summary.csv: one row per (cell x load level), built from the run directory alone (read
through costtax.store.rundata.RunData), so a crash, a resume or a later `costtax report` all see the
same data. The only code that builds DataFrames is this package (costtax.report).

This module assembles the row; the columns come from cost.py, quality.py, tax.py, checks.py and
params.py. Every column is listed, with its unit and meaning, in costtax/report/columns.py
(README's column reference is generated from it). Contract columns come first, in a fixed
order; new columns are appended, none renamed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..store.records import SUMMARY
from ..store.rundata import RunData, as_row
from .checks import SANITY_FLAGS, add_checks, cold_start  # noqa: F401
from .client import client_columns
from .columns import CONTRACT_COLUMNS
from .cost import METER_COLUMNS, REPEAT_METRICS, SPREAD_METRICS, cell_cost, latency_cis, load_metrics, repeat_aggregate  # noqa: F401
from .params import PROVENANCE_COLUMNS, add_params, add_provenance  # noqa: F401
from .quality import cell_quality, technique_summary
from .scored_answers import scored_deltas, summarize_scored_answers
from .tax import SMALL_N, add_tax  # noqa: F401


def frames(rd: RunData) -> dict[str, Any]:
    """The run's de-duplicated records as DataFrames (the load level as its label)."""
    import pandas as pd

    return {
        "meta": rd.meta,
        "calls": pd.DataFrame([as_row(c) for c in rd.calls]),
        "answers": pd.DataFrame([as_row(a) for a in rd.answers]),
        "cells": pd.DataFrame([as_row(u) for u in rd.units]),
        "scores": [as_row(s) for s in rd.scores],
    }


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json plus the record files as DataFrames (kept for callers of the earlier API)."""
    return frames(RunData.open(run_dir))


class RowCache:
    """Each summary row's own columns (cost, load, quality with diversity, technique, scored
    answers, stages), kept in memory between the rebuilds of one profile so that a row is
    computed when its unit ends and not again: the rebuild after the next unit and the one at
    the run's end reuse it and recompute only the columns that read other rows (×plain,
    deltas, A/A, capacity, drift). An entry is used only while its fingerprint holds: the row's
    cells.jsonl records, its answer, call and score counts, and the frames' column types (a
    later cell's records can change them); anything else recomputes it. Nothing is written to
    the run directory; `costtax report` and a resumed run start without one and rebuild every
    row from the files, to the same bytes (tests/report/test_summary_once.py)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[Any, dict, dict]] = {}
        self.hits = 0
        self.misses = 0


_PROFILE_CACHES: dict[str, RowCache] = {}


def profile_row_cache(run_dir: str | Path) -> RowCache:
    """The RowCache of the profile writing `run_dir` (costtax/run/rundir.py rebuild_summary)."""
    return _PROFILE_CACHES.setdefault(str(Path(run_dir).resolve()), RowCache())


def drop_profile_row_cache(run_dir: str | Path) -> None:
    _PROFILE_CACHES.pop(str(Path(run_dir).resolve()), None)


def _schema(frame) -> tuple:
    return tuple((str(k), str(v)) for k, v in frame.dtypes.items())


def build_summary(run_dir: str | Path | RunData, cache: RowCache | None = None):
    """One row per (cell x load level): contract columns first, then cost, load, quality,
    technique, steady-state checks, tax and provenance. `cache`: rows already computed by this
    profile (RowCache), reused while their inputs are unchanged."""
    import pandas as pd

    rd = run_dir if isinstance(run_dir, RunData) else RunData.open(run_dir)
    data = frames(rd)
    meta, calls, answers, cells = data["meta"], data["calls"], data["answers"], data["cells"]
    if not rd.units:
        return pd.DataFrame(columns=CONTRACT_COLUMNS)
    prompts_answer = rd.reference_answers
    prompt_scorers = {p.id: p.effective_scorer for p in rd.prompts}
    slo = rd.config.get("slo_p95_s")
    groups: dict[tuple, list] = {}
    for u in rd.units:
        groups.setdefault(u.key.level, []).append(u)
    schema = (_schema(answers), _schema(calls), _schema(data["cells"]), slo, len(prompts_answer), len(prompt_scorers))
    rows, stage_rows = [], {}
    for (cell, level), units in groups.items():
        load = level.label
        units = sorted(units, key=lambda u: (u.cell_repeat, u.probe))
        in_group = lambda f: (f["cell"] == cell) & (f["load"] == load)  # noqa: E731
        a = answers[in_group(answers)] if not answers.empty else answers
        c = calls[in_group(calls)] if not calls.empty else calls
        evals = [e for e in data["scores"] if e["cell"] == cell and e["load"] == load]
        fingerprint = (schema, json.dumps([as_row(u) for u in units], sort_keys=True, default=str), len(a), len(c), len(evals))
        hit = cache.rows.get((cell, load)) if cache is not None else None
        if hit is not None and hit[0] == fingerprint:
            cache.hits += 1
            row, stage = dict(hit[1]), hit[2]
        else:
            row = _own_columns(rd, meta, cell, level, units, a, c, evals, prompts_answer, prompt_scorers, slo)
            from .stages import row_stage_columns  # cost per stage, waste ratio (report/stages.py)

            stage = row_stage_columns(cell, load, data)
            if cache is not None:
                cache.misses += 1
                cache.rows[(cell, load)] = (fingerprint, dict(row), stage)
        stage_rows[(cell, load)] = stage
        if evals and cell != "plain":  # reads the plain row's scores: never cached
            base = [e for e in data["scores"] if e["cell"] == "plain" and e["load"] == load]
            if base:
                row.update(scored_deltas(base, evals))
        rows.append(row)
    df = pd.DataFrame(rows)
    df = add_tax(df, answers, meta)
    df = add_checks(df, answers, calls, meta)
    df = add_provenance(df, meta)
    df = add_params(df, cells)
    from .capacity import add_capacity_columns  # capacity search, early stops (report/capacity.py)

    df = add_capacity_columns(df, data)
    from .repeats import add_repeat_drift  # what moved when cell repeats disagree (report/repeats.py)

    df = add_repeat_drift(df, data)
    from .stages import add_stage_columns  # cost per stage, waste ratio (report/stages.py)

    df = add_stage_columns(df, data, stage_rows)
    from .invariants import add_invariants  # cross-checks between independent counters (report/invariants.py)

    df = add_invariants(df, data)
    cols = CONTRACT_COLUMNS + [c for c in df.columns if c not in CONTRACT_COLUMNS]
    for c in CONTRACT_COLUMNS:
        if c not in df:
            df[c] = None
    return df[cols]


def _own_columns(rd: RunData, meta, cell: str, level, units, a, c, evals, prompts_answer, prompt_scorers, slo) -> dict[str, Any]:
    """The row's columns that read only its own records (RowCache keeps them)."""
    load = level.label
    unit_rows = {id(u): as_row(u) for u in units}
    cr = unit_rows[id(units[-1])]
    ok_units = [unit_rows[id(u)] for u in units if u.status == "ok"]
    failed = [unit_rows[id(u)] for u in units if u.status != "ok"]
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
    for u in ok_units or [unit_rows[id(u)] for u in units]:
        k, pr = int(u.get("cell_repeat", 0)), int(u.get("probe") or 0)
        ua = a[(a["cell_repeat"] == k) & (a["probe"] == pr)] if len(a) else a
        uc = c[(c["cell_repeat"] == k) & (c["probe"] == pr)] if len(c) else c
        m = cell_cost(ua, uc, u) if len(ua) else {"cell_wall_s": u.get("cell_wall_s")}
        m.update(load_metrics(ua, uc, u, level, slo))
        m["_latencies"] = list(ua["latency_s"]) if len(ua) else []
        m["_unit"] = u
        m["_calls"] = uc
        per_unit.append(m)
    if len(a):
        pooled = cell_cost(a, c, {**cr, "cell_wall_s": sum(u.get("cell_wall_s") or 0 for u in ok_units) or cr.get("cell_wall_s"),
                                  "resumed_answers": sum(int(u.get("resumed_answers") or 0) for u in ok_units),
                                  "score_batches": [b for u in ok_units for b in (u.get("score_batches") or [])]})
        pooled.update(load_metrics(a, c, cr, level, slo))
        pooled.update(latency_cis(a, c, level))
        row.update(pooled)
        row.update(cell_quality(a, prompts_answer, prompt_scorers))
    else:
        row["cell_wall_s"] = cr.get("cell_wall_s")
    row.update(repeat_aggregate(per_unit))
    # contention: the worst repeat speaks for the row (a median would hide one disturbed repeat)
    shares = [m["foreign_cpu_share"] for m in per_unit if isinstance(m.get("foreign_cpu_share"), (int, float))]
    row["foreign_cpu_share"] = max(shares) if shares else None
    row.update(client_columns([m["_unit"] for m in per_unit]))  # the client's own loop lag and CPU (report/client.py)
    row.update(cold_start(per_unit))
    row.update(technique_summary(cr, a, prompts_answer))
    if evals:
        row.update(summarize_scored_answers(evals))
    return row


def write_summary(run_dir: str | Path, cache: RowCache | None = None):
    """Rebuild summary.csv (atomically) from the run directory; returns the DataFrame. A
    summary-only directory (no answers.jsonl) keeps its summary.csv as it is. `cache`: the
    profile's RowCache (rows its earlier rebuilds computed)."""
    import os

    rd = RunData.open(run_dir)
    if rd.summary_only:  # nothing to rebuild from: the stored summary stands
        return load_summary(rd.path)
    df = build_summary(rd, cache)
    tmp = rd.path / f".{SUMMARY}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, rd.path / SUMMARY)
    return df


def load_summary(run_dir: str | Path):
    """summary.csv as a DataFrame; the directory is checked by RunData first (one-line errors)."""
    import pandas as pd

    rd = RunData.open(run_dir, records=False)
    if not rd.summary_path.is_file():
        from ..store.rundata import RunDataError

        raise RunDataError(rd.summary_path, f"missing; rebuild it with `costtax report {rd.path}`")
    return pd.read_csv(rd.summary_path)


def summary_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """summary.csv as a list of dicts, NaN as None (compare and the plugin read rows this way)."""
    from ._values import without_nan

    return [without_nan(r) for r in load_summary(run_dir).to_dict("records")]


def ensure_summary(run_dir: str | Path):
    """summary.csv as the run wrote it; built (and written) only when the run never wrote one
    (it crashed before its first cell ended)."""
    rd = RunData.open(run_dir, records=False)
    if rd.summary_path.is_file():
        return load_summary(run_dir)
    return write_summary(run_dir)
