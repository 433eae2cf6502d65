"""RunData: the one reader of a run directory.

summary, plan, plots, compare and the pytest plugin open runs only through `RunData.open`. It
- refuses a bad directory with one line naming the file and what is wrong (RunDataError, a
  CosttaxError: the CLI prints it and exits 2; the plugin fails the test with it): missing,
  run.json absent or not JSON, a newer or unknown layout, record files of another run;
- reads run.json, calls.jsonl, answers.jsonl, cells.jsonl, scores.jsonl (a torn last line, a
  crash mid-write, is skipped as records.read_jsonl always did);
- de-duplicates rows across resumed sessions: the last record of a unit wins (a failed unit
  later resumed), the last record of an answer wins, calls and scores count only when written by
  the session that wrote their answer (a killed session's calls of answers it never finished);
- keys everything by a typed `UnitKey` (cell, LoadLevel, cell repeat, probe);
- recovers the run's prompts and reference answers from the per-source counts run.json recorded;
- exposes typed frozen records: the fields the report reads (queue_s, score_wait_s, ...) are
  fields, not entries of an `extra` dict. `extra` keeps only what no generic reader reads: the
  technique's own answer fields (its summary() and check() read them) and engine details;
- reads summary-only directories (run.json + summary.csv and no answers.jsonl, as the committed
  capacity runs under bench/results): `summary_only` is then True, the record tuples are empty,
  and `costtax report` prints the stored summary instead of rebuilding (and erasing) it.

A leaf module: no pandas here; DataFrames are built by costtax.report from these records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import CosttaxError
from .load import BATCH, LoadLevel
from .records import ANSWERS, CALLS, CELLS, RUN_JSON, SCHEMA_VERSION, SCORES, SUMMARY, read_jsonl

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


# -- typed records -------------------------------------------------------------------------------
def _opt_float(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class Call:
    run_id: str
    cell: str
    call_id: str
    answer_id: str
    prompt_id: str
    stage: str
    n: int
    prompt_tokens: int | None
    cached_prompt_tokens: int | None
    output_tokens: int
    t_submit_s: float
    t_first_token_s: float | None
    t_finish_s: float
    latency_s: float
    ttft_s: float | None
    load: LoadLevel
    cell_repeat: int = 0
    session: str | None = None
    batch_id: str | None = None
    answer_ids: tuple[str, ...] | None = None
    prompt_tokens_computed: int | None = None
    ttft_source: str | None = None
    repeat: int = 0
    round: int | None = None
    finish_reasons: tuple[str | None, ...] | None = None
    queue_s: float | None = None  # waited for a load slot / the engine before submit
    score_wait_s: float | None = None  # score calls: wait in the reward micro-batcher
    score_batch_pairs: float | None = None  # score calls: pairs in the micro-batch that served it
    reward_tokens_computed: float | None = None  # score calls: tokens the reward model computed
    rewards: tuple[float | None, ...] | None = None  # score and eval calls: the rewards returned
    probe: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)  # engine/scorer details no reader reads


_CALL_LIFTED = ("queue_s", "score_wait_s", "score_batch_pairs", "reward_tokens_computed")


@dataclass(frozen=True)
class Answer:
    run_id: str
    cell: str
    answer_id: str
    technique: str
    prompt_id: str
    text: str
    calls: int
    prompt_tokens: int | None
    output_tokens: int
    latency_s: float
    load: LoadLevel
    cell_repeat: int = 0
    session: str | None = None
    cached_prompt_tokens: int | None = None
    prompt_set: str | None = None
    repeat: int = 0
    reward_tokens: int = 0
    score_latency_s: float = 0.0
    selection_reward: float | None = None
    truncated: bool = False
    ttft_s: float | None = None
    t_arrival_s: float | None = None
    t_finish_s: float | None = None
    admission: int | None = None  # release order within the unit (records.py docstring)
    slot: int | None = None  # closed loop: concurrency slot that ran it
    probe: int = 0  # search re-probe (UnitKey.probe)
    eval_reward: float | None = None  # from the answer's eval call (same session), None without one
    candidate_texts: tuple[str, ...] | None = None  # best-of-N style techniques: every candidate
    candidate_rewards: tuple[float | None, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # the technique's own fields


_ANSWER_LIFTED = ("candidate_texts", "candidate_rewards")


@dataclass(frozen=True)
class Unit:
    """The cells.jsonl record of a unit (the last one written for its key)."""

    run_id: str
    cell: str
    technique: str
    params: Mapping[str, Any]
    status: str
    answers: int
    cell_wall_s: float | None
    load: LoadLevel
    cell_repeat: int = 0
    engine_start_s: float | None = None
    is_baseline: bool = False
    error: str | None = None
    meter: Mapping[str, Any] = field(default_factory=dict)
    engine_stats: Mapping[str, Any] = field(default_factory=dict)
    t_start_s: float | None = None
    t_end_s: float | None = None
    session: str | None = None
    resumed_answers: int = 0
    warmup: Mapping[str, Any] = field(default_factory=dict)
    load_stats: Mapping[str, Any] = field(default_factory=dict)
    engine_counters: Mapping[str, Any] = field(default_factory=dict)
    score_batches: tuple[Mapping[str, Any], ...] = ()
    probe: int = 0

    @property
    def key(self) -> UnitKey:
        return UnitKey(self.cell, self.load, self.cell_repeat, self.probe)


@dataclass(frozen=True)
class Score:
    """A scores.jsonl row: one answer evaluated by its prompt source's declared scorer."""

    answer_id: str
    cell: str
    prompt_id: str
    scorer: str
    load: LoadLevel
    cell_repeat: int = 0
    session: str | None = None
    source: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  # scorer-specific results (pass@k, refusal_*)


def as_row(rec) -> dict[str, Any]:
    """A record as a flat dict for the report's tables: the load level as its label, the
    scorer-specific values of a Score spread into the row."""
    d = {f.name: getattr(rec, f.name) for f in fields(rec)}
    d["load"] = rec.load.label
    if isinstance(rec, Score):
        vals = d.pop("values")
        d = {**vals, **d}
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
        from .prompts import select_prompts

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


_LEVELS: dict[str, LoadLevel] = {}


def _level(label, where: Path) -> LoadLevel:
    label = label or BATCH.label
    lvl = _LEVELS.get(label)
    if lvl is None:
        try:
            lvl = LoadLevel.from_label(str(label))
        except CosttaxError:
            raise RunDataError(where, f"unknown load level {label!r}") from None
        _LEVELS[label] = lvl
    return lvl


def _build(cls, path: Path, meta: Mapping[str, Any], raw: dict[str, list[dict]]) -> RunData:
    # Units: the last record of a key wins (a failed unit later resumed and finished); a key keeps
    # the position of its first record.
    last: dict[UnitKey, dict] = {}
    for r in raw[CELLS]:
        lvl = _level(r.get("load"), path / CELLS)
        last[UnitKey(r["cell"], lvl, int(r.get("cell_repeat") or 0), int(r.get("probe") or 0))] = r
    units = tuple(_unit(r, k) for k, r in last.items())
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
    calls = tuple(_call(r, path) for r in call_rows)
    eval_reward: dict[str, float | None] = {}
    for c in calls:
        if c.stage == "eval":
            eval_reward[c.answer_id] = (c.rewards or (None,))[0] if c.rewards is not None else None
    answers = tuple(_answer(r, path, eval_reward) for r in ans_rows)
    check_owner = bool(ans_rows) and any("session" in r for r in ans_rows)
    scores: dict[str, dict] = {}
    for r in raw[SCORES]:
        if not check_owner or owner.get(r.get("answer_id")) == r.get("session"):
            scores[r["answer_id"]] = r
    return cls(path, meta, calls, answers, units, tuple(_score(r, path) for r in scores.values()))


def _pick(r: Mapping[str, Any], cls) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in r.items() if k in names}


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else None


def _call(r: dict, path: Path) -> Call:
    extra = dict(r.get("extra") or {})
    kw = _pick(r, Call)
    kw.pop("extra", None)
    for k in _CALL_LIFTED:
        kw[k] = _opt_float(extra.pop(k, None))
    kw["rewards"] = _tuple(extra.pop("rewards", None))
    kw["answer_ids"] = _tuple(r.get("answer_ids"))
    kw["finish_reasons"] = _tuple(r.get("finish_reasons"))
    kw["load"] = _level(r.get("load"), path / CALLS)
    kw["cell_repeat"] = int(r.get("cell_repeat") or 0)
    kw["probe"] = int(r.get("probe") or 0)
    return Call(**kw, extra=extra)


def _answer(r: dict, path: Path, eval_reward: Mapping[str, float | None]) -> Answer:
    extra = dict(r.get("extra") or {})
    kw = _pick(r, Answer)
    kw.pop("extra", None)
    for k in _ANSWER_LIFTED:
        kw[k] = _tuple(extra.pop(k, None))
    kw["load"] = _level(r.get("load"), path / ANSWERS)
    kw["cell_repeat"] = int(r.get("cell_repeat") or 0)
    kw["probe"] = int(r.get("probe") or 0)
    kw["eval_reward"] = eval_reward.get(r["answer_id"])
    return Answer(**kw, extra=extra)


def _unit(r: dict, key: UnitKey) -> Unit:
    kw = _pick(r, Unit)
    kw["load"], kw["cell_repeat"], kw["probe"] = key.load, key.cell_repeat, key.probe
    kw["params"] = r.get("params") or {}
    kw["score_batches"] = tuple(b for b in (r.get("score_batches") or []) if isinstance(b, Mapping))
    for k in ("meter", "engine_stats", "warmup", "load_stats", "engine_counters"):
        kw[k] = r.get(k) if isinstance(r.get(k), Mapping) else {}
    return Unit(**kw)


_SCORE_FIELDS = {"answer_id", "cell", "prompt_id", "scorer", "load", "cell_repeat", "session", "source"}


def _score(r: dict, path: Path) -> Score:
    return Score(
        answer_id=r["answer_id"], cell=r["cell"], prompt_id=r.get("prompt_id"), scorer=r.get("scorer"),
        load=_level(r.get("load"), path / SCORES), cell_repeat=int(r.get("cell_repeat") or 0),
        session=r.get("session"), source=r.get("source"),
        values={k: v for k, v in r.items() if k not in _SCORE_FIELDS and k != "run_id"},
    )
