"""Run-directory files and the writer. A leaf module: no torch, no pandas.

Contract (later changes add fields, never rename them):
- run.json      : schema_version, run_id, config, provenance, status, times, cells.
- calls.jsonl   : one CallRecord per model call, appended + flushed as each call finishes.
- answers.jsonl : one AnswerRecord per final answer, appended + flushed.
- cells.jsonl   : one CellRecord per finished (or failed) cell: status, wall time, meter.
- scores.jsonl  : one ScoreRecord per answer its prompt source's scorer evaluated.
- summary.csv   : one row per cell, rebuilt by costtax.report from the files above.

The records themselves (every field, its reading rule, the layout version, which fields layout 1
kept in `extra`) are declared once in costtax.store.schema; the writer here appends them and the reader
(costtax.store.rundata) reads them back through the same declarations. The record types are part of
this module's API (RunWriter's arguments) and are imported from there.

Fields agreed for round 5 (issues 25, 27, 28), declared in costtax.store.schema with defaults so the
schema work, the variance work and the scale work add the same names (all optional, old runs read
with the defaults; the writer leaves them out while they hold their default, see costtax.store.schema):
- answers: `admission` (int|None, 0-based order in which the load generator released the answer
  within its unit, every load shape), `slot` (int|None, closed loop: which of the C concurrency slots
  ran it; None for batch/rate), `worker` (int, client worker process index, 0 with one process),
  `probe` (int, 0 = first measurement of a (cell, level, cell_repeat); a search re-probe writes 1, 2, ...).
- calls: `worker` (int, as above), `probe` (int, as above).
- cells (units): `probe` (int; the reader keys units by (cell, level, cell_repeat, probe) so a
  re-probed level never replaces the earlier record), `client` (dict: the client's own gauges for the
  unit — `loop` (which event loop was measured), `lag_p50_s`, `lag_p99_s`, `cpu_share`, `workers`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .schema import (  # noqa: F401  (the file names and record types are this module's API)
    ANSWERS,
    CALLS,
    CELLS,
    GEN_STAGES,
    RUN_JSON,
    SCHEMA_VERSION,
    SCORES,
    STAGES,
    SUMMARY,
    AnswerRecord,
    CallRecord,
    CellRecord,
    ScoreRecord,
    to_row,
)


def to_json_dict(rec) -> dict[str, Any]:
    """The JSON object the writer appends for a record (costtax.store.schema.to_row)."""
    return to_row(rec)


class RunWriter:
    """Appends rows as they finish; every row is flushed so a kill -9 loses no finished row."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._files = {
            name: open(self.run_dir / name, "a", encoding="utf-8") for name in (CALLS, ANSWERS, CELLS, SCORES)
        }

    def _append(self, name: str, rec, default=None) -> None:
        fh = self._files[name]
        fh.write(json.dumps(to_row(rec), ensure_ascii=False, default=default) + "\n")
        fh.flush()

    def call(self, rec: CallRecord) -> None:
        self._append(CALLS, rec)

    def answer(self, rec: AnswerRecord) -> None:
        self._append(ANSWERS, rec)

    def scored(self, rec: ScoreRecord) -> None:
        self._append(SCORES, rec, default=str)  # a scorer's value may be a Path (the sandbox's python)

    def cell(self, rec: CellRecord) -> None:
        self._append(CELLS, rec)
        for fh in self._files.values():
            os.fsync(fh.fileno())

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()


def read_run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8"))
