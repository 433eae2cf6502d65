"""Run-directory records and the writer. A leaf module: no torch, no pandas.

Contract (later changes add fields, never rename them):
- run.json      : schema_version, run_id, config, provenance, status, times, cells.
- calls.jsonl   : one CallRecord per model call, appended + flushed as each call finishes.
- answers.jsonl : one AnswerRecord per final answer, appended + flushed.
- cells.jsonl   : one CellRecord per finished (or failed) cell: status, wall time, meter.
- summary.csv   : one row per cell, rebuilt by costtax.report from the files above.

Fields agreed for round 5 (issues 25, 27, 28), declared here before any writer emits them so the
schema work, the variance work and the scale work add the same names (all optional, old runs read
with the defaults):
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .load import DEFAULT_LABEL

SCHEMA_VERSION = 1
RUN_JSON, CALLS, ANSWERS, CELLS, SUMMARY = "run.json", "calls.jsonl", "answers.jsonl", "cells.jsonl", "summary.csv"
# One row per final answer whose prompt source declares a scorer that runs after the unit
# (pass@k in the sandbox, refusal by rule and judge): costtax.prompts.grading.evaluate_answers.
SCORES = "scores.jsonl"
STAGES = ("sample", "critique", "revise", "score", "eval", "continue")
GEN_STAGES = ("sample", "critique", "revise", "continue")  # stages that generate tokens


@dataclass(frozen=True)
class CallRecord:
    run_id: str
    cell: str
    call_id: str
    answer_id: str
    prompt_id: str
    stage: str
    n: int
    prompt_tokens: int | None  # per sample, as the model saw it (chat template applied); None: the server did not say
    cached_prompt_tokens: int | None  # over all n samples; None if the engine cannot tell
    output_tokens: int  # over all n samples
    t_submit_s: float  # seconds since the run's epoch (time.monotonic based)
    t_first_token_s: float | None
    t_finish_s: float
    latency_s: float
    ttft_s: float | None
    batch_id: str | None = None
    answer_ids: tuple[str, ...] | None = None  # every answer a batched call served
    prompt_tokens_computed: int | None = None  # prefill actually computed over n samples
    ttft_source: str | None = None  # engine | batch | None
    repeat: int = 0
    round: int | None = None  # CAI round (1-based) for critique/revise calls
    finish_reasons: tuple[str | None, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    session: str | None = None  # the profile invocation that wrote the row (resume-safe joins)
    load: str = DEFAULT_LABEL  # the unit's LoadLevel.label (costtax.load)
    cell_repeat: int = 0  # which whole-cell repeat (--cell-repeats) wrote the row
    probe: int = 0  # 0: first measurement of (cell, level, cell_repeat); a search re-probe writes 1, 2, ...

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")


@dataclass(frozen=True)
class AnswerRecord:
    run_id: str
    cell: str
    answer_id: str
    technique: str
    prompt_id: str
    text: str
    calls: int  # technique calls (eval scoring excluded)
    prompt_tokens: int | None
    output_tokens: int
    latency_s: float  # first submit -> last finish of this answer's technique calls
    cached_prompt_tokens: int | None = None
    prompt_set: str | None = None
    repeat: int = 0
    reward_tokens: int = 0
    score_latency_s: float = 0.0
    selection_reward: float | None = None  # BoN: reward of the chosen candidate
    truncated: bool = False
    ttft_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # technique-specific fields
    session: str | None = None
    load: str = DEFAULT_LABEL  # LoadLevel.label
    cell_repeat: int = 0
    t_arrival_s: float | None = None  # the load generator released the answer (seconds since epoch)
    t_finish_s: float | None = None  # its last call finished (seconds since epoch)
    admission: int | None = None  # 0-based release order within its unit (see the module docstring)
    slot: int | None = None  # closed loop: the concurrency slot 0..C-1 that ran it; None for batch/rate
    probe: int = 0  # as CallRecord.probe


@dataclass(frozen=True)
class CellRecord:
    run_id: str
    cell: str
    technique: str
    params: dict[str, Any]
    status: str  # ok | failed
    answers: int
    cell_wall_s: float
    engine_start_s: float | None
    is_baseline: bool = False
    error: str | None = None
    meter: dict[str, Any] = field(default_factory=dict)
    engine_stats: dict[str, Any] = field(default_factory=dict)
    t_start_s: float | None = None
    t_end_s: float | None = None
    session: str | None = None
    resumed_answers: int = 0  # answers of this unit finished by an earlier, interrupted session
    load: str = DEFAULT_LABEL  # LoadLevel.label
    cell_repeat: int = 0
    warmup: dict[str, Any] = field(default_factory=dict)  # warm-up before the unit: answers, wall_s (never in statistics)
    load_stats: dict[str, Any] = field(default_factory=dict)  # offered/achieved answers/s, timed_out, saturated
    engine_counters: dict[str, Any] = field(default_factory=dict)  # engine counters before/after the unit
    score_batches: list[dict[str, Any]] = field(default_factory=list)  # reward micro-batcher: pairs, calls, wait_s
    probe: int = 0  # as CallRecord.probe; the reader keys units by (cell, level, cell_repeat, probe)


def to_json_dict(rec) -> dict[str, Any]:
    d = asdict(rec)
    for k, v in list(d.items()):
        if isinstance(v, tuple):
            d[k] = list(v)
    return d


class RunWriter:
    """Appends rows as they finish; every row is flushed so a kill -9 loses no finished row."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._files = {
            name: open(self.run_dir / name, "a", encoding="utf-8") for name in (CALLS, ANSWERS, CELLS, SCORES)
        }

    def _append(self, name: str, rec) -> None:
        fh = self._files[name]
        fh.write(json.dumps(to_json_dict(rec), ensure_ascii=False) + "\n")
        fh.flush()

    def call(self, rec: CallRecord) -> None:
        self._append(CALLS, rec)

    def answer(self, rec: AnswerRecord) -> None:
        self._append(ANSWERS, rec)

    def scored(self, row: dict[str, Any]) -> None:
        fh = self._files[SCORES]
        fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        fh.flush()

    def cell(self, rec: CellRecord) -> None:
        self._append(CELLS, rec)
        for fh in self._files.values():
            os.fsync(fh.fileno())

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (killed mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8"))
