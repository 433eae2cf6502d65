"""The run directory's records, declared once: the writer (costtax.store.records.RunWriter) writes these
dataclasses and the reader (costtax.store.rundata.RunData) reads rows back into them. A leaf module: no
pandas, no torch.

Records and their files (SCHEMA_VERSION is run.json's `schema_version`):
- CallRecord    calls.jsonl    one per model call (sample, critique, revise, continue, score, eval);
- AnswerRecord  answers.jsonl  one per final answer;
- CellRecord    cells.jsonl    one per finished (or failed) unit: a cell at one load level, one cell repeat;
- ScoreRecord   scores.jsonl   one per answer scored by its prompt source's scorer (pass@k, refusal);
- RunRecord     run.json       the run's metadata (written as a dict and updated during the run; the
                               reader checks it and offers it typed as RunData.run).

How a field is declared (dataclass field metadata, read by `to_row` and `from_row`):
- `read`: the reader's coercion of the stored value (tuple from a JSON list, float or None, ...);
- `legacy_extra`: layout 1 (schema_version 1) wrote this field inside the row's `extra` dict; the
  reader lifts it out when the row has no (or a null) top-level value. Layout 2 writes it at the
  top level, null where the call has none (as every other declared field: a row of layout 2
  holds all its record's declared fields but the `omit_default` ones).
  These are the only keys ever lifted: queue_s, score_wait_s, score_batch_pairs,
  reward_tokens_computed, rewards, evaluated_by_session (calls) and candidate_texts,
  candidate_rewards (answers). Every other `extra` key stays in `extra`: the technique's own answer
  fields (its summary() and check() read them) and engine/scorer details no generic reader reads
  (share_prefix, reward_model, kernel_path, padding_fraction, score_batch_calls).
- `omit_default`: the writer leaves the field out while it equals its default, and the reader
  gives the default back when it is absent. Decision for the round-5 fields agreed in issues 25,
  27 and 28 (answers `admission`, `slot`, `worker`, `probe`; calls `worker`, `probe`; cells
  `probe`, `client`): omitted while default (None, 0, {}), so a run that does not use them writes
  rows with the same keys as before and the runner golden (tests/golden_runner) changes only
  where this layout moved fields out of `extra`; a writer that sets them writes them. The reader
  cannot tell "0 written" from "absent": both mean the default, by design. `evaluated_by_session`
  is omitted while None too: layout 1 wrote it (in `extra`, or in scores rows) only when set.
- `unknown`: every record but ScoreRecord ends with it. The reader puts there any top-level key
  this costtax does not declare (a newer writer's field), so nothing read is dropped; the writer
  writes its entries back at the top level (baseline_from copies rows through the schema).
  ScoreRecord's open part is `values`: the scorer's results, spread at the top level of the row
  (SCORE_VALUES names those the scorers in costtax.prompts.grading write).
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Mapping

from ..load.levels import BATCH, LoadLevel

# run.json's schema_version. 1: the fields marked legacy_extra lived in `extra`; 2: they are
# top-level fields. A reader refuses a directory newer than it reads (rundata.read_meta).
SCHEMA_VERSION = 2
RUN_JSON, CALLS, ANSWERS, CELLS, SUMMARY = "run.json", "calls.jsonl", "answers.jsonl", "cells.jsonl", "summary.csv"
# One row per final answer whose prompt source declares a scorer that runs after the unit
# (pass@k in the sandbox, refusal by rule and judge): costtax.prompts.grading.evaluate_answers.
SCORES = "scores.jsonl"
STAGES = ("sample", "critique", "revise", "score", "eval", "continue")
GEN_STAGES = ("sample", "critique", "revise", "continue")  # stages that generate tokens


class RecordError(ValueError):
    """A row that does not fit its record: one line naming the field."""


# -- readers' coercions (applied to stored values, never to what a writer passes) --------------
def opt_float(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def opt_tuple(v) -> tuple | None:
    return tuple(v) if isinstance(v, (list, tuple)) else None


def int0(v) -> int:
    return int(v or 0)


def opt_int(v) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def mapping(v) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def mappings(v) -> tuple[Mapping[str, Any], ...]:
    return tuple(b for b in (v or []) if isinstance(b, Mapping))


def or_empty(v) -> Mapping[str, Any]:
    return v or {}


def as_dict(v) -> dict[str, Any]:
    return dict(v) if isinstance(v, Mapping) else {}


_LEVELS: dict[str, LoadLevel] = {}


def level(label) -> LoadLevel:
    """The LoadLevel a row's `load` names (absent: batch, rows written before load levels)."""
    if isinstance(label, LoadLevel):
        return label
    label = str(label or BATCH.label)
    lvl = _LEVELS.get(label)
    if lvl is None:
        lvl = _LEVELS[label] = LoadLevel.from_label(label)
    return lvl


def _f(default=MISSING, *, read=None, legacy_extra: bool = False, omit_default: bool = False, factory=MISSING):
    meta = {"read": read, "legacy_extra": legacy_extra, "omit_default": omit_default}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _load_field():
    return _f(BATCH, read=level)  # the unit's LoadLevel (costtax.load.levels); written as its label


def _unknown():
    return field(default_factory=dict, metadata={"unknown": True})


class _Record:
    """Shared behaviour: `load` given as a label is normalised to its LoadLevel."""

    FILE: ClassVar[str]
    VERSION: ClassVar[int]  # the layout this record last changed in

    def _normalise_load(self) -> None:
        if not isinstance(self.load, LoadLevel):
            object.__setattr__(self, "load", level(self.load))


@dataclass(frozen=True)
class CallRecord(_Record):
    FILE: ClassVar[str] = CALLS
    VERSION: ClassVar[int] = 2

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
    answer_ids: tuple[str, ...] | None = _f(None, read=opt_tuple)  # every answer a batched call served
    prompt_tokens_computed: int | None = None  # prefill actually computed over n samples
    ttft_source: str | None = None  # engine | batch | None
    repeat: int = 0
    round: int | None = None  # CAI round (1-based) for critique/revise calls
    finish_reasons: tuple[str | None, ...] | None = _f(None, read=opt_tuple)
    extra: Mapping[str, Any] = _f(read=as_dict, factory=dict)  # engine/scorer details no generic reader reads
    session: str | None = None  # the profile invocation that wrote the row (resume-safe joins)
    load: LoadLevel = _load_field()
    cell_repeat: int = _f(0, read=int0)  # which whole-cell repeat (--cell-repeats) wrote the row
    queue_s: float | None = _f(None, read=opt_float, legacy_extra=True)  # waited for a load slot / the engine before submit
    score_wait_s: float | None = _f(None, read=opt_float, legacy_extra=True)  # score calls: wait in the reward micro-batcher
    score_batch_pairs: float | None = _f(None, read=opt_float, legacy_extra=True)  # score calls: pairs in the micro-batch that served it
    reward_tokens_computed: float | None = _f(None, read=opt_float, legacy_extra=True)  # score calls: tokens the reward model computed
    rewards: tuple[float | None, ...] | None = _f(None, read=opt_tuple, legacy_extra=True)  # score and eval calls: the rewards returned
    evaluated_by_session: str | None = _f(None, legacy_extra=True, omit_default=True)  # eval call of an earlier session's answer: the session that ran it
    worker: int = _f(0, read=int0, omit_default=True)  # client worker process index (0 with one process)
    probe: int = _f(0, read=int0, omit_default=True)  # 0: first measurement of its unit; a search re-probe writes 1, 2, ...
    unknown: Mapping[str, Any] = _unknown()

    def __post_init__(self):
        if self.stage not in STAGES:
            raise RecordError(f"stage must be one of {STAGES}, got {self.stage!r}")
        self._normalise_load()


@dataclass(frozen=True)
class AnswerRecord(_Record):
    FILE: ClassVar[str] = ANSWERS
    VERSION: ClassVar[int] = 2

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
    extra: Mapping[str, Any] = _f(read=as_dict, factory=dict)  # the technique's own fields (its summary() and check() read them)
    session: str | None = None
    load: LoadLevel = _load_field()
    cell_repeat: int = _f(0, read=int0)
    t_arrival_s: float | None = None  # the load generator released the answer (seconds since epoch)
    t_finish_s: float | None = None  # its last call finished (seconds since epoch)
    candidate_texts: tuple[str, ...] | None = _f(None, read=opt_tuple, legacy_extra=True)  # best-of-N style techniques: every candidate
    candidate_rewards: tuple[float | None, ...] | None = _f(None, read=opt_tuple, legacy_extra=True)
    admission: int | None = _f(None, read=opt_int, omit_default=True)  # 0-based release order within its unit
    slot: int | None = _f(None, read=opt_int, omit_default=True)  # closed loop: which of the C slots ran it
    worker: int = _f(0, read=int0, omit_default=True)
    probe: int = _f(0, read=int0, omit_default=True)
    unknown: Mapping[str, Any] = _unknown()

    def __post_init__(self):
        self._normalise_load()


@dataclass(frozen=True)
class CellRecord(_Record):
    """One unit's record (the reader calls it a Unit)."""

    FILE: ClassVar[str] = CELLS
    VERSION: ClassVar[int] = 1

    run_id: str
    cell: str
    technique: str
    params: Mapping[str, Any] = _f(read=or_empty)
    status: str = _f()  # ok | failed
    answers: int = _f()
    cell_wall_s: float | None = _f()
    engine_start_s: float | None = _f()
    is_baseline: bool = False
    error: str | None = None
    meter: Mapping[str, Any] = _f(read=mapping, factory=dict)
    engine_stats: Mapping[str, Any] = _f(read=mapping, factory=dict)
    t_start_s: float | None = None
    t_end_s: float | None = None
    session: str | None = None
    resumed_answers: int = 0  # answers of this unit finished by an earlier, interrupted session
    load: LoadLevel = _load_field()
    cell_repeat: int = _f(0, read=int0)
    warmup: Mapping[str, Any] = _f(read=mapping, factory=dict)  # warm-up before the unit: answers, wall_s (never in statistics)
    load_stats: Mapping[str, Any] = _f(read=mapping, factory=dict)  # offered/achieved answers/s, timed_out, saturated
    engine_counters: Mapping[str, Any] = _f(read=mapping, factory=dict)  # engine counters before/after the unit
    score_batches: tuple[Mapping[str, Any], ...] = _f((), read=mappings)  # reward micro-batcher: pairs, calls, wait_s
    probe: int = _f(0, read=int0, omit_default=True)  # units are keyed (cell, level, cell_repeat, probe)
    client: Mapping[str, Any] = _f(read=mapping, factory=dict, omit_default=True)  # the client's own gauges for the unit
    unknown: Mapping[str, Any] = _unknown()

    def __post_init__(self):
        if self.status not in ("ok", "failed"):
            raise RecordError(f"status must be ok or failed, got {self.status!r}")
        self._normalise_load()


# The keys costtax.prompts.grading.evaluate_answers writes into a scores row, by scorer (the
# runner scores only these two after a unit: context.run_scoring; exact answers are judged by the report).
SCORE_VALUES = {
    "refusal": ("refusal_rule", "refusal_judge", "refusal_judge_score"),
    "pass_at_k": ("code_extracted_by", "code_passed", "code_fail_reason", "code_wall_s", "code_exit_code", "code_stage",
                  "code_exit_via", "code_sandbox", "candidates_n", "candidates_passed", "candidate_fail_reasons"),
}


@dataclass(frozen=True)
class ScoreRecord(_Record):
    FILE: ClassVar[str] = SCORES
    VERSION: ClassVar[int] = 1

    run_id: str | None
    cell: str
    answer_id: str
    prompt_id: str | None = None
    scorer: str | None = None  # pass_at_k | refusal | exact
    source: str | None = None  # the prompt source (costtax.prompts)
    load: LoadLevel = _load_field()
    cell_repeat: int = _f(0, read=int0)
    session: str | None = None  # the session that wrote the answer (its scores row counts only under it)
    evaluated_by_session: str | None = _f(None, omit_default=True)  # the session that scored it, when a later one did
    values: Mapping[str, Any] = field(default_factory=dict, metadata={"unknown": True})  # the scorer's results (SCORE_VALUES)

    def __post_init__(self):
        self._normalise_load()


@dataclass(frozen=True)
class RunRecord:
    """run.json. Written as a dict (rundir.new_run_meta, then updated by startup, profile and the
    server record as the run goes); read and checked through this declaration."""

    FILE: ClassVar[str] = RUN_JSON
    VERSION: ClassVar[int] = SCHEMA_VERSION

    run_id: str
    schema_version: int = 1  # absent in the earliest runs: layout 1
    config: Mapping[str, Any] = _f(read=or_empty, factory=dict)
    sampling: Mapping[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    status: str | None = None  # running | finished | interrupted | failed
    provenance: Mapping[str, Any] | None = None
    prompts: Mapping[str, Any] | None = None  # count, sets, sources (each with the count it used)
    scoring: Mapping[str, Any] | None = None
    cells: tuple[str, ...] | None = _f(None, read=opt_tuple)
    load_levels: tuple[str, ...] | None = _f(None, read=opt_tuple)
    search: Mapping[str, Any] | None = None
    cell_repeats: int | None = None
    baseline_cell: str | None = None
    events: tuple[Mapping[str, Any], ...] = _f((), read=mappings)
    failures: tuple[Mapping[str, Any], ...] = _f((), read=mappings)
    engine: Mapping[str, Any] | None = None
    engine_start: Mapping[str, Any] | None = None
    server: Mapping[str, Any] | None = None
    servers: tuple[Mapping[str, Any], ...] = _f((), read=mappings)
    reward_model: Mapping[str, Any] | None = None
    eval_reward: Mapping[str, Any] | None = None
    refusal_judge: Mapping[str, Any] | None = None
    idle_power_w: Any = None
    baseline_from: Mapping[str, Any] | None = None
    unknown: Mapping[str, Any] = _unknown()


RECORDS = (CallRecord, AnswerRecord, CellRecord, ScoreRecord, RunRecord)


# -- the codec -----------------------------------------------------------------------------------
def declared(cls) -> tuple[str, ...]:
    """The keys a row of `cls` may hold at its top level (the open mapping excluded)."""
    return tuple(f.name for f in fields(cls) if not f.metadata.get("unknown"))


def legacy_extra(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.metadata.get("legacy_extra"))


def _default(f):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _json(v):
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    if isinstance(v, LoadLevel):
        return v.label
    return v


def to_row(rec) -> dict[str, Any]:
    """The JSON object written for a record: declared fields in declaration order (tuples as
    lists, the load level as its label; `omit_default` fields only when set), then the open
    mapping's entries at the top level, never over a declared field."""
    out: dict[str, Any] = {}
    open_part: Mapping[str, Any] = {}
    for f in fields(rec):
        v = getattr(rec, f.name)
        if f.metadata.get("unknown"):
            open_part = v
            continue
        if f.metadata.get("omit_default") and v == _default(f):
            continue
        out[f.name] = _json(v)
    for k, v in open_part.items():
        out.setdefault(k, _json(v))
    return out


@dataclass(frozen=True)
class _Plan:
    """What from_row needs of a record class, computed once per class."""

    fields: Mapping[str, Any]
    lifts: tuple[str, ...]
    open_name: str | None
    required: tuple[str, ...]


_PLANS: dict[type, _Plan] = {}


def _plan(cls) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        fs = {f.name: f for f in fields(cls)}
        plan = _PLANS[cls] = _Plan(
            fs, tuple(n for n, f in fs.items() if f.metadata.get("legacy_extra")),
            next((n for n, f in fs.items() if f.metadata.get("unknown")), None),
            tuple(n for n, f in fs.items() if f.default is MISSING and f.default_factory is MISSING))
    return plan


def from_row(cls, row: Mapping[str, Any], **derived):
    """A stored row as `cls`: legacy `extra` keys lifted, each field's `read` coercion applied,
    undeclared keys kept in the open mapping. `derived`: reader-side fields (not on disk).
    Raises RecordError naming a field the row lacks or holds badly."""
    plan = _plan(cls)
    names = plan.fields
    if plan.lifts and isinstance(row.get("extra"), Mapping) and any(k in row["extra"] for k in plan.lifts):
        row = dict(row)
        extra = dict(row["extra"])
        for k in plan.lifts:
            if k in extra:
                v = extra.pop(k)
                if row.get(k) is None:  # a top-level value (layout 2) wins over a copy in extra
                    row[k] = v
        row["extra"] = extra
    kw: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for k, v in row.items():
        f = names.get(k)
        if f is None or k == plan.open_name or k in derived:
            rest[k] = v
            continue
        read = f.metadata.get("read")
        kw[k] = read(v) if read is not None else v
    for name in plan.required:
        if name not in kw and name not in derived:
            read = names[name].metadata.get("read")
            if read is None:  # a required field a row lacks; one with a coercion reads "absent" as it says
                raise RecordError(f"lacks field {name!r}")
            kw[name] = read(None)
    if plan.open_name is not None:
        kw[plan.open_name] = rest
    try:
        return cls(**kw, **derived)
    except RecordError:
        raise
    except Exception as exc:  # a label LoadLevel cannot parse, a bad value __post_init__ refuses
        raise RecordError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
