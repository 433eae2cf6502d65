"""RunData: the one reader of a run directory.

summary, plan, plots, compare and the pytest plugin open runs only through `RunData.open`. It
- refuses a bad directory with one line naming the file and what is wrong (RunDataError, a
  CosttaxError: the CLI prints it and exits 2; the plugin fails the test with it): missing,
  run.json absent or not JSON, a newer or unknown layout, record files of another run;
- reads run.json, calls.jsonl, answers.jsonl, cells.jsonl, scores.jsonl (a torn last line, a
  crash mid-write, is skipped by jsonio.read_jsonl);
- de-duplicates rows across resumed sessions: the last record of a unit wins (a failed unit
  later resumed), the last record of an answer wins, calls and scores count only when written by
  the session that wrote their answer (a killed session's calls of answers it never finished);
- keys everything by a typed `UnitKey` (cell, LoadLevel, cell repeat, probe);
- recovers the run's prompts and reference answers from the per-source counts run.json recorded;
- exposes typed frozen records, the ones costtax.store.schema declares for the writer too (Call,
  Answer, Unit, Score extend them only by what the reader derives): the fields the report reads
  (queue_s, score_wait_s, ...) are fields, not entries of an `extra` dict; rows of layout 1, which
  kept some of them in `extra`, are lifted by the schema's explicit list; a field this costtax
  does not declare is kept in the record's `unknown` mapping (a Score's `values`), never dropped;
- offers the same rows without de-duplication (`read_file`) to the runner's bookkeeping (rundir,
  the search, baseline reuse), so nothing else parses record files by hand;
- reads summary-only directories (run.json + summary.csv and no answers.jsonl, as the committed
  capacity runs under bench/results): `summary_only` is then True, the record tuples are empty,
  and `costtax report` prints the stored summary instead of rebuilding (and erasing) it.

A leaf module: no pandas here; DataFrames are built by costtax.report from these records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import CosttaxError
from ..load.levels import BATCH, LoadLevel
from ..jsonio import read_jsonl
from .schema import (
    ANSWERS, CALLS, CELLS, RUN_JSON, SCHEMA_VERSION, SCORES, SUMMARY, AnswerRecord, CallRecord, CellRecord, RecordError,
    RunRecord, ScoreRecord, from_row,
)
from .schema import level as level_of

RECORD_FILES = (CALLS, ANSWERS, CELLS, SCORES)


class RunDataError(CosttaxError):
    """A run directory that cannot be read: one line, the file first."""

    def __init__(self, path: Path | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class UnitKey:
    """One unit of a run: a cell at one load level in one cell repeat (and probe: a capacity
    search re-measures its bracketing levels under probe 1, 2, ...)."""

    cell: str
    load: LoadLevel
    cell_repeat: int = 0
    probe: int = 0  # a search re-probe of the same (cell, level, cell repeat): 1, 2, ...

    @property
    def level(self) -> tuple[str, LoadLevel]:
        """(cell, load level): one summary row."""
        return (self.cell, self.load)


# -- typed records ---------------------------------------------------------------------------------
# The reader's types are the records costtax.store.schema declares (the one declaration the writer
# uses too), each extended only by what the reader derives from other rows.
@dataclass(frozen=True)
class Call(CallRecord):
    """A calls.jsonl row as read (fields: costtax.store.schema.CallRecord)."""


@dataclass(frozen=True)
class Answer(AnswerRecord):
    """An answers.jsonl row as read, with the reward of its eval call (same session; None without one)."""

    eval_reward: float | None = None


@dataclass(frozen=True)
class Unit(CellRecord):
    """The cells.jsonl record of a unit (the last one written for its key)."""

    @property
    def key(self) -> UnitKey:
        return UnitKey(self.cell, self.load, self.cell_repeat, self.probe)


@dataclass(frozen=True)
class Score(ScoreRecord):
    """A scores.jsonl row: one answer evaluated by its prompt source's declared scorer; `values`
    holds the scorer's results (pass@k, refusal_*)."""


def as_row(rec) -> dict[str, Any]:
    """A record as a flat dict for the report's tables: the load level as its label, the
    scorer-specific values of a Score and the undeclared fields of any record spread into the row
    (never over a declared field)."""
    d = {f.name: getattr(rec, f.name) for f in fields(rec)}
    d["load"] = rec.load.label
    if isinstance(rec, Score):
        vals = d.pop("values")
        d = {**vals, **d}
    for k, v in (d.pop("unknown", None) or {}).items():
        d.setdefault(k, v)
    for k, v in d.items():
        if isinstance(v, tuple) and k not in ("answer_ids", "finish_reasons"):
            d[k] = list(v)
    return d


# -- the run ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunData:
    path: Path
    meta: Mapping[str, Any]
    calls: tuple[Call, ...]
    answers: tuple[Answer, ...]
    units: tuple[Unit, ...]
    scores: tuple[Score, ...]
    summary_only: bool = False

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    @cached_property
    def run(self) -> RunRecord:
        """run.json typed (costtax.store.schema.RunRecord); undeclared keys kept in `unknown`."""
        try:
            return from_row(RunRecord, self.meta)
        except RecordError as exc:
            raise RunDataError(self.path / RUN_JSON, str(exc)) from None

    @property
    def config(self) -> Mapping[str, Any]:
        return self.meta.get("config") or {}

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def levels(self) -> tuple[LoadLevel, ...]:
        """The load levels the run measured, in run order (run.json, else its records)."""
        recorded = self.meta.get("load_levels")
        if isinstance(recorded, list) and recorded:
            return tuple(_level(x, self.path / RUN_JSON) for x in recorded)
        return tuple(dict.fromkeys(u.load for u in self.units)) or (BATCH,)

    @cached_property
    def prompts(self) -> tuple:
        """The run's prompts: its sources loaded again (cheap), cut to the count each source
        used as run.json recorded (prompts.sources); older runs: the config's limit. Empty when
        a source can no longer be loaded (a moved file): reference answers are then unknown."""
        from ..prompts import select_prompts

        cfg = self.config
        try:
            counts = {s["source"]: int(s["used"]) for s in (self.meta.get("prompts") or {})["sources"]}
        except (KeyError, TypeError, ValueError):
            counts = None
        try:
            prompts, _ = select_prompts(cfg.get("prompts", []), limit=cfg.get("limit"), seed=cfg.get("seed", 0), counts=counts)
        except Exception:
            return ()
        return tuple(prompts)

    @cached_property
    def reference_answers(self) -> dict[str, str | None]:
        """prompt id -> reference answer (None where the source has none)."""
        return {p.id: p.answer for p in self.prompts}

    def answers_at(self, cell: str | None = None, load: LoadLevel | None = None) -> tuple[Answer, ...]:
        return tuple(a for a in self.answers if (cell is None or a.cell == cell) and (load is None or a.load == load))

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, records: bool = True) -> "RunData":
        """Read and check a run directory. records=False reads run.json only (summary readers)."""
        path = Path(path).expanduser()
        meta = read_meta(path)
        # A run writes answers.jsonl from its start (empty until the first answer), so a missing
        # one means the records were left out on purpose: a summary-only directory.
        summary_only = not (path / ANSWERS).is_file()
        if summary_only and records and not (path / SUMMARY).is_file():
            raise RunDataError(path / ANSWERS, "missing, and there is no summary.csv either: nothing to read")
        if not records or summary_only:
            return cls(path, meta, (), (), (), (), summary_only=summary_only)
        run_ids = {meta["run_id"]}
        base = meta.get("baseline_from")
        if isinstance(base, Mapping) and isinstance(base.get("run_id"), str):
            run_ids.add(base["run_id"])  # plugin runs before baseline_from: rows copied from the baseline run
        raw = {name: list(_rows(path / name, run_ids)) for name in RECORD_FILES}
        return _build(cls, path, meta, raw)


def read_meta(path: Path) -> dict[str, Any]:
    """run.json, checked: one RunDataError line for anything a reader cannot use."""
    if not path.exists():
        raise RunDataError(path, "no such directory; give a run directory (it holds run.json)")
    if not path.is_dir():
        raise RunDataError(path, "is a file; give a run directory (it holds run.json)")
    f = path / RUN_JSON
    if not f.is_file():
        raise RunDataError(f, "missing: not a costtax run directory")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunDataError(f, "not UTF-8 text: not a costtax run.json") from None
    except json.JSONDecodeError as exc:
        raise RunDataError(f, f"not valid JSON (line {exc.lineno}: {exc.msg}); the run may have been killed while writing it") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("run_id"), str):
        raise RunDataError(f, "has no run_id: not a costtax run.json")
    version = meta.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RunDataError(f, f"unknown layout (schema_version {version!r}); this costtax reads {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise RunDataError(f, f"layout {version} is newer than this costtax reads ({SCHEMA_VERSION}); upgrade costtax")
    return meta


def _rows(path: Path, run_ids: set[str]) -> Iterable[dict[str, Any]]:
    for i, r in enumerate(read_jsonl(path), 1):
        rid = r.get("run_id") if isinstance(r, dict) else None
        if not isinstance(r, dict):
            raise RunDataError(path, f"row {i} is not a JSON object")
        if rid is not None and rid not in run_ids:
            raise RunDataError(path, f"row {i} belongs to run {rid}, but run.json is run {sorted(run_ids)[0]}: "
                                     "record files of another run were copied in")
        yield r


def _level(label, where: Path) -> LoadLevel:
    try:
        return level_of(label)
    except CosttaxError:
        raise RunDataError(where, f"unknown load level {label!r}") from None


def _build(cls, path: Path, meta: Mapping[str, Any], raw: dict[str, list[dict]]) -> RunData:
    # Units: the last record of a key wins (a failed unit later resumed and finished); a key keeps
    # the position of its first record.
    last: dict[UnitKey, Unit] = {}
    for u in read_rows(Unit, raw[CELLS], path / CELLS):
        last[u.key] = u
    units = tuple(last.values())
    # Answers: the last record of an answer id wins, at its own position in the file.
    ans_rows = raw[ANSWERS]
    last_at = {r["answer_id"]: i for i, r in enumerate(ans_rows)}
    ans_rows = [r for i, r in enumerate(ans_rows) if last_at[r["answer_id"]] == i]
    owner = {r["answer_id"]: r.get("session") for r in ans_rows}
    call_rows = raw[CALLS]
    if ans_rows and any("session" in r for r in ans_rows) and any("session" in r for r in call_rows):
        # A run killed mid-cell leaves calls of answers it never finished; the resumed session
        # redoes those answers. Only calls of the session that wrote the answer count.
        call_rows = [r for r in call_rows if r.get("answer_id") in owner and owner[r["answer_id"]] == r.get("session")]
    calls = tuple(read_rows(Call, call_rows, path / CALLS))
    eval_reward: dict[str, float | None] = {}
    for c in calls:
        if c.stage == "eval":
            eval_reward[c.answer_id] = (c.rewards or (None,))[0] if c.rewards is not None else None
    answers = tuple(read_rows(Answer, ans_rows, path / ANSWERS, lambda r: {"eval_reward": eval_reward.get(r["answer_id"])}))
    check_owner = bool(ans_rows) and any("session" in r for r in ans_rows)
    scores: dict[str, dict] = {}
    for r in raw[SCORES]:
        if not check_owner or owner.get(r.get("answer_id")) == r.get("session"):
            scores[r["answer_id"]] = r
    return cls(path, meta, calls, answers, units, tuple(read_rows(Score, scores.values(), path / SCORES)))


def read_rows(cls, rows: Iterable[Mapping[str, Any]], where: Path, derive=None) -> Iterable:
    """Rows of one record file as `cls` (costtax.store.schema.from_row: layout-1 `extra` fields lifted,
    undeclared fields kept); a row that does not fit is one RunDataError line naming the file,
    the row and the field. `derive(row)`: the reader-side fields of that row."""
    for i, r in enumerate(rows, 1):
        try:
            yield from_row(cls, r, **(derive(r) if derive else {}))
        except RecordError as exc:
            raise RunDataError(where, f"row {i} {exc}") from None


def read_file(cls, run_dir: str | Path) -> list:
    """Every row of one record file of a run directory as `cls` (Call, Answer, Unit, Score), in
    file order, without RunData's de-duplication across sessions: for the runner's own bookkeeping
    while a run is being written (rundir's resume state, the search's probes, baseline reuse)."""
    path = Path(run_dir) / cls.FILE
    return list(read_rows(cls, read_jsonl(path), path))
