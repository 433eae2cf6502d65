"""The run directory's bookkeeping: open it (validate, create, or reopen for --resume, write
run.json), tell which units and answers a resumed run already finished, and close it (final
run.json, summary and plots rebuilt). Nothing here starts a model or runs a unit.

The run directory is the single source of truth; costtax.report rebuilds every table from it.
"""
from __future__ import annotations

import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .. import provenance
from ..config import RunConfig
from ..errors import ConfigError
from ..load.levels import LoadLevel
from ..phases import phase
from ..store.records import RUN_JSON, SCHEMA_VERSION, RunWriter, read_run_json
from ..jsonio import write_json_atomic
from ..store.rundata import Answer, Call, Score, Unit, read_file

if TYPE_CHECKING:  # pragma: no cover
    from ..techniques.constitution import Constitution

Event = Callable[[str, dict], None]


def no_events(kind: str, data: dict) -> None:
    """The default `emit`: nobody listens."""


def new_run_id() -> str:
    """The one definition of a run id: local start time, then 6 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def new_session_id() -> str:
    """One process's share of a run (a run resumed twice has three sessions)."""
    return secrets.token_hex(4)


def config_from_run(run_dir: Path) -> RunConfig:
    data = read_run_json(run_dir)["config"]
    fields = {k for k, f in RunConfig.__dataclass_fields__.items() if f.init and k != "cells"}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields}
    return RunConfig(**kwargs)


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    ignore = {"out"}
    return [f"{k}: {da.get(k)!r} -> {db.get(k)!r}" for k in sorted(set(da) | set(db)) if k not in ignore and da.get(k) != db.get(k)]


@dataclass
class RunState:
    """An open run directory: what every step writes into."""

    config: RunConfig
    run_dir: Path
    run_id: str
    meta: dict[str, Any]
    session: str
    epoch: float  # clock origin (time.monotonic()) of every t_*_s this process writes
    writer: Any
    prompts: tuple
    resumed: bool = False
    # parsed once by preflight (None when no cell uses one); cai reads it from here, never the file
    constitution: "Constitution | None" = None


def open_run(config: RunConfig, *, resume: str | Path | None = None, check_rewards: bool = True, emit: Event | None = None) -> RunState:
    """Validate, create or reopen the run directory, write run.json."""
    from .preflight import run_preflight

    emit = emit or no_events
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / RUN_JSON).is_file():
            raise ConfigError("--resume", str(resume), "is not a costtax run directory (no run.json)")
        old = config_from_run(run_dir)
        diff = config_diff(old, config)
        if diff:
            raise ConfigError("--resume", str(resume), "config differs from the run's: " + "; ".join(diff) + "; rerun with the original flags or omit them")
        meta = read_run_json(run_dir)
        run_id = meta["run_id"]
    else:
        run_id = new_run_id()
        run_dir = Path(config.out) if config.out else Path("runs") / run_id
        meta = None
    pre = run_preflight(config, run_dir=run_dir, resume=resume is not None, check_rewards=check_rewards)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ".costtax-write-test").touch()
        (run_dir / ".costtax-write-test").unlink()
    except OSError as exc:  # preflight's access check cannot see everything (root, read-only mounts, /proc)
        raise ConfigError("--out", str(run_dir), f"cannot write there ({exc.strerror or exc}); choose a writable directory") from None
    meta = meta or new_run_meta(config, run_id, pre)
    meta["status"] = "running"
    if resume is not None and meta.get("servers"):
        from ..engines.server_record import reap_on_resume

        reap_on_resume(meta, emit)  # a server a dead session left holds memory and a port
    # A resumed run starts a new clock origin, recorded as its own event.
    epoch = time.monotonic()
    session = new_session_id()
    meta.setdefault("events", []).append({"t": provenance.now_iso(), "event": "resume" if resume else "start", "session": session})
    write_json_atomic(run_dir / RUN_JSON, meta)
    emit("run_dir", {"run_dir": str(run_dir), "run_id": run_id})
    return RunState(config, run_dir, run_id, meta, session, epoch, RunWriter(run_dir), tuple(pre.prompts), resume is not None,
                    pre.constitution)


def new_run_meta(config: RunConfig, run_id: str, pre) -> dict[str, Any]:
    """run.json of a new run, before any model starts."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "config": config.to_dict(),
        "sampling": config.sampling_dict(),
        "started_at": provenance.now_iso(),
        "provenance": {"machine": provenance.machine(), "versions": provenance.versions(), "git_commit": provenance.git_commit()},
        "prompts": {"count": len(pre.prompts), "sets": sorted({p.prompt_set for p in pre.prompts}), "sources": list(pre.sources)},
        "scoring": pre.scoring,
        "cells": [c.cell for c in config.cells],
        "load_levels": [lvl.label for lvl in config.load_levels],
        "search": config.search.to_dict() if config.search else None,
        "cell_repeats": config.cell_repeats,
        "baseline_cell": "plain",
        "events": [],
    }


def save_meta(state: RunState) -> None:
    write_json_atomic(state.run_dir / RUN_JSON, state.meta)


UnitKey = tuple[str, LoadLevel, int]  # (cell, load level, cell repeat)


def done_units(run_dir: Path) -> set[UnitKey]:
    """Every unit a session of this run finished. Rows written before load levels existed
    carry no `load`: they are the batch level's."""
    return {(u.cell, u.load, u.cell_repeat) for u in read_file(Unit, run_dir) if u.status == "ok"}


def done_answers(run_dir: Path, cell: str, level: LoadLevel, cell_repeat: int = 0, probe: int = 0) -> frozenset[str]:
    """Answer ids of one unit already written (by an interrupted or failed session)."""
    return frozenset(a.answer_id for a in read_file(Answer, run_dir)
                     if a.cell == cell and a.load == level and a.cell_repeat == cell_repeat and a.probe == probe)


def evaluation_backlog(run_dir: Path, cell: str, level: LoadLevel, cell_repeat: int = 0,
                       probe: int = 0) -> list[tuple[Any, bool, bool]]:
    """Answers of one unit an earlier session finished, each as (its rundata.Answer, has an
    eval call, has a scores.jsonl row). A session killed (or a unit failed) after an answer was
    written but before the unit's scoring pass leaves answers with neither; the resumed unit
    evaluates those (CellContext.adopt_backlog). Same rule as rundata: the last row of an answer
    wins, and an eval call or scores row counts only when it carries the answer's session."""
    rows = {a.answer_id: a for a in read_file(Answer, run_dir)
            if a.cell == cell and a.load == level and a.cell_repeat == cell_repeat and a.probe == probe}
    if not rows:
        return []
    evald = {(c.answer_id, c.session) for c in read_file(Call, run_dir) if c.stage == "eval" and c.answer_id in rows}
    scored = {(s.answer_id, s.session) for s in read_file(Score, run_dir) if s.answer_id in rows}
    return [(a, (aid, a.session) in evald, (aid, a.session) in scored) for aid, a in rows.items()]


def rebuild_summary(state: RunState, after: str, emit: "Event | None" = None) -> None:
    """summary.csv after a unit, so an interrupted run still has its table. Never fatal: the rows
    are safe; the table is rebuilt at the end or by `costtax report`."""
    try:
        from ..report import write_summary
        from ..report.summary import profile_row_cache

        with phase(emit, "updating summary.csv"):  # rows of earlier units are reused (RowCache)
            write_summary(state.run_dir, cache=profile_row_cache(state.run_dir))
    except Exception as exc:
        warnings.warn(f"could not rebuild summary.csv after {after}: {exc}", RuntimeWarning)


def close_run(state: RunState, models, status: str, emit: "Event | None" = None) -> None:
    """Final run.json, summary and plots rebuilt, then `models.close()` (startup.StartedModels:
    engine and reward models) when models were started."""
    meta = state.meta
    meta["status"] = status
    meta["finished_at"] = provenance.now_iso()
    save_meta(state)
    state.writer.close()
    try:
        from ..report import write_plots, write_summary
        from ..report.summary import profile_row_cache

        with phase(emit, "rebuilding summary.csv and plots"):  # only the cross-row columns are new work
            write_plots(state.run_dir, write_summary(state.run_dir, cache=profile_row_cache(state.run_dir)))
    except Exception as exc:  # a report failure never loses the rows already written
        warnings.warn(f"could not rebuild summary/plots: {exc}", RuntimeWarning)
    finally:
        from ..report.summary import drop_profile_row_cache

        drop_profile_row_cache(state.run_dir)
    try:
        if models is not None:
            with phase(emit, "shutting down the engine" + (" and server" if getattr(models, "server", None) is not None else "")):
                models.close()
    finally:
        # again: warnings raised while rebuilding the report or closing the engines are events too
        save_meta(state)
