"""The run, in named steps: `open_run` (validate, create or reopen the run directory),
`start_models` (engine or served engine, reward models; cold start measured apart), `run_unit`
(the cell runner: one cell at one load level, one cell repeat, warm-up before the first repeat,
one metered window, rows written as they finish) and `close_run`. `profile()` chains them:
for each load level, for each cell repeat, every cell in turn, plain first.

The run directory is the single source of truth; costtax.report rebuilds every table from it.
"""
from __future__ import annotations

import json
import secrets
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import provenance
from .config import RunConfig
from .errors import ConfigError, CosttaxError
from .records import CELLS, RUN_JSON, SCHEMA_VERSION, CellRecord, RunWriter, read_jsonl, read_run_json, write_json_atomic
from .run_events import WarningEvents

Event = Callable[[str, dict], None]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    run_id: str
    status: str  # finished | interrupted
    cells_ok: tuple[str, ...]
    cells_failed: tuple[str, ...]

    def summary(self):
        """The summary table as a pandas DataFrame (built by costtax.report)."""
        from .report import load_summary

        return load_summary(self.run_dir)


class RunInterrupted(CosttaxError):
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(f"interrupted; finished rows are saved. Resume with: costtax profile --resume {run_dir}")


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def config_from_run(run_dir: Path) -> RunConfig:
    data = read_run_json(run_dir)["config"]
    fields = RunConfig.__dataclass_fields__
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields and k != "cells"}
    return RunConfig(**kwargs)


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    ignore = {"out"}
    return [f"{k}: {da.get(k)!r} -> {db.get(k)!r}" for k in sorted(set(da) | set(db)) if k not in ignore and da.get(k) != db.get(k)]


def _make_engine(config: RunConfig, model_dir: Path | None):
    from .engines import make_engine

    kwargs: dict[str, Any] = dict(seed=config.seed, max_model_len=config.max_model_len, trust_remote_code=config.trust_remote_code)
    if config.engine == "vllm":
        kwargs["enable_prefix_caching"] = config.prefix_caching
    return make_engine(config.engine, str(model_dir), **kwargs)


def _remote_engine(config: RunConfig):
    """--engine openai --base-url URL: a server costtax did not start. The model is the server's
    name for it; the embedded default alias means 'the server's only model'."""
    from .engines import make_engine
    from .models import DEFAULT_MODEL

    model = None if config.model == DEFAULT_MODEL else config.model
    return make_engine("openai", model, base_url=config.base_url, seed=config.seed, max_model_len=config.max_model_len,
                       trust_remote_code=config.trust_remote_code)


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


@dataclass
class Models:
    engine: Any
    scorer: Any = None
    eval_scorer: Any = None
    owns_engine: bool = True
    restart: bool = True
    server: Any = None  # ServedVllm costtax started (--serve); stopped after the engine closes
    refusal_judge: Any = None  # RefusalJudge, loaded when a prompt source is scored by refusal
    _async: Any = None  # the engine as an AsyncEngine (a batching worker around a sync engine)
    _async_for: Any = None  # the engine _async was made for (a restart replaces the engine)

    @property
    def aengine(self):
        if self._async is None or self._async_for is not self.engine:
            self.close_async()
            self._async, self._async_for = _as_async(self.engine), self.engine
        return self._async

    def close_async(self) -> None:
        """Stop a batching worker this run added (never the engine it wraps)."""
        w = self._async
        self._async = None
        if w is not None and w is not self.engine and hasattr(w, "_worker"):
            w._worker.close()


def open_run(config: RunConfig, *, resume: str | Path | None = None, check_rewards: bool = True, emit: Event | None = None) -> RunState:
    """Step 1: validate, create or reopen the run directory, write run.json."""
    from .preflight import run_preflight

    emit = emit or (lambda kind, data: None)
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
        run_id = _new_run_id()
        run_dir = Path(config.out) if config.out else Path("runs") / run_id
        meta = None
    pre = run_preflight(config, run_dir=run_dir, resume=resume is not None, check_rewards=check_rewards)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ".costtax-write-test").touch()
        (run_dir / ".costtax-write-test").unlink()
    except OSError as exc:  # preflight's access check cannot see everything (root, read-only mounts, /proc)
        raise ConfigError("--out", str(run_dir), f"cannot write there ({exc.strerror or exc}); choose a writable directory") from None
    meta = meta or {
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
        "cell_repeats": config.cell_repeats,
        "baseline_cell": "plain",
        "events": [],
    }
    meta["status"] = "running"
    if resume is not None and meta.get("servers"):
        from .engines.server_record import reap_on_resume

        reap_on_resume(meta, emit)  # a server a dead session left holds memory and a port
    # A resumed run starts a new clock origin, recorded as its own event.
    epoch = time.monotonic()
    session = secrets.token_hex(4)
    meta.setdefault("events", []).append({"t": provenance.now_iso(), "event": "resume" if resume else "start", "session": session})
    write_json_atomic(run_dir / RUN_JSON, meta)
    emit("run_dir", {"run_dir": str(run_dir), "run_id": run_id})
    return RunState(config, run_dir, run_id, meta, session, epoch, RunWriter(run_dir), tuple(pre.prompts), resume is not None)


def start_models(state: RunState, *, engine=None, scorer=None, eval_scorer=None, restart_dead_engine: bool | None = None, emit: Event | None = None) -> Models:
    """Step 2: build and start the engine (cold start measured apart), load reward models,
    measure idle power where NVML is there."""
    from .metering import ResourceMeter
    from .models import resolve_model

    emit = emit or (lambda kind, data: None)
    config, meta = state.config, state.meta
    owns = engine is None
    injected_scorer = scorer
    server = None
    t_server = time.monotonic()
    if engine is None and config.serve:
        from .engines import make_engine
        from .engines.serve import ServedVllm
        from .engines.server_record import RunJsonHooks

        emit("status", {"msg": f"resolving model {config.model}"})
        model_dir = resolve_model(config.model)
        log = state.run_dir / "server.log"
        emit("status", {"msg": f"starting vLLM's OpenAI server for {config.model} (log: {log})"})
        hooks = RunJsonHooks(meta, state.run_dir / RUN_JSON, state.session)  # run.json `servers`
        server = ServedVllm(model_dir, log, seed=config.seed, max_model_len=config.max_model_len,
                            enable_prefix_caching=config.prefix_caching, health_timeout_s=config.server_timeout_s,
                            serve_args=config.serve_args, on_spawn=hooks.spawned, on_stop=hooks.stopped)
        server.__enter__()
        engine = make_engine("openai", server.model_name, **server.engine_kwargs(), seed=config.seed)
    elif engine is None and config.engine == "openai":
        engine = _remote_engine(config)
        emit("status", {"msg": f"connecting to {config.base_url}"})
    elif engine is None:
        emit("status", {"msg": f"resolving model {config.model}"})
        engine = _make_engine(config, resolve_model(config.model))
        emit("status", {"msg": f"starting {config.engine} engine (cold start is measured apart)"})
    try:
        with ResourceMeter() as start_meter:
            engine_start_s = engine.start()
        if server is not None:
            # cold start of a served engine: server launch to healthy, plus the client's own start
            engine_start_s = time.monotonic() - t_server
            meta["server"] = {"log": str(state.run_dir / "server.log"), "base_url": getattr(engine, "base_url", None), "started_by": "costtax"}
        meta["engine"] = engine.provenance()
        external = server is None and getattr(engine, "name", None) == "openai"
        meta["engine_start"] = {"engine_start_s": engine_start_s, "meter": _reading(start_meter, external=external)}
        if not external:
            _say_if_busy(start_meter, emit)
        scorer, eval_scorer = _reward_models(config, meta, scorer, eval_scorer, emit, policy=engine)
        # an injected scorer (tests, library users) brings no judge model of the run's own
        refusal_judge = _refusal_judge(state, emit) if injected_scorer is None else None
        idle = _idle_power()
        if idle is not None:
            meta["idle_power_w"] = idle
        write_json_atomic(state.run_dir / RUN_JSON, meta)
    except BaseException:
        # nothing may outlive a failed start: the client, then the server's process group
        if owns:
            try:
                engine.close()
            except Exception:
                pass
        if server is not None:
            server.__exit__(None, None, None)
        raise
    restart = (owns and server is None and config.engine_kind != "openai") if restart_dead_engine is None else restart_dead_engine
    return Models(engine, scorer, eval_scorer, owns, restart, server, refusal_judge)


def _refusal_judge(state: RunState, emit: Event):
    """The refusal question asked of the configured judge model, when some prompt's source is
    scored by refusal (AdvBench, DoNotAnswer, HarmBench, harmful). A scalar reward model cannot
    answer a question: the judge column is then empty and run.json says why."""
    if not any((p.scorer or p.spec.scorer) == "refusal" for p in state.prompts):
        return None
    from .rewards.refusal import RefusalJudge

    try:
        judge = RefusalJudge(state.config.reward_model, trust_remote_code=state.config.trust_remote_code)
    except ConfigError as exc:
        state.meta["refusal_judge"] = {"skipped": str(exc)}
        return None
    emit("status", {"msg": "loading the refusal judge"})
    state.meta["refusal_judge"] = {"spec": state.config.reward_model, "load_s": judge.load(), **getattr(judge, "provenance", lambda: {})()}
    return judge


def _say_if_busy(start_meter, emit: Event) -> None:
    """The engine start is metered anyway: if neighbours kept the run's CPUs busy through it, say
    so before the cells run, not only in the table at the end."""
    from .report.table import CONTENTION_WARN_SHARE

    share = getattr(start_meter.reading, "foreign_cpu_share", None)
    if isinstance(share, (int, float)) and share > CONTENTION_WARN_SHARE:
        emit("status", {"msg": f"machine busy: other processes kept {share:.0%} of this run's CPUs busy during the engine start; "
                               "timings will be inflated (each cell records foreign_cpu_share)"})


def _idle_power(seconds: float = 3.0) -> dict[str, Any] | None:
    """Mean board power over a few seconds with nothing running, for the energy sanity check.
    NVML only: without it (CPU machines) there is nothing to measure and nothing is waited."""
    from .metering.nvml import NvmlSampler

    probe = NvmlSampler()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with probe:
            time.sleep(0.05)
    if probe.reading is None or not probe.reading.available:
        return None
    from .metering import ResourceMeter

    with ResourceMeter() as m:
        time.sleep(seconds)
    r = m.result()
    w = getattr(r, "power_mean_w", None) if r is not None else None
    return {"power_w": w, "seconds": seconds} if w is not None else None


class _NullWriter:
    """Warm-up rows go nowhere: they are never part of the statistics."""

    def call(self, rec) -> None:
        pass

    def answer(self, rec) -> None:
        pass

    def scored(self, row) -> None:
        pass


def _as_async(engine):
    """Engines without `agenerate` (a sync batched engine) get the batching worker."""
    if hasattr(engine, "agenerate"):
        return engine
    from .engines.batching import BatchingEngine

    return BatchingEngine(engine)


def done_units(run_dir: Path) -> set[tuple[str, str, int]]:
    return {(r["cell"], r.get("load", "batch"), int(r.get("cell_repeat", 0))) for r in read_jsonl(run_dir / CELLS) if r.get("status") == "ok"}


def _done_answers(run_dir: Path, cell: str, load: str = "batch", cell_repeat: int = 0) -> frozenset[str]:
    return frozenset(
        r["answer_id"]
        for r in read_jsonl(run_dir / "answers.jsonl")
        if r.get("cell") == cell and r.get("load", "batch") == load and int(r.get("cell_repeat", 0)) == cell_repeat
    )


def run_unit(
    state: RunState, models: Models, spec, level, cell_repeat: int = 0, *, warmup: bool = True, emit: Event | None = None, meter_factory=None
) -> CellRecord:
    """Step 3, the cell runner: one cell at one load level, one cell repeat. Writes its calls,
    answers and one cells.jsonl record; returns that record. Raises only for ConfigError and
    KeyboardInterrupt: any other failure is recorded as a failed unit (finished rows kept)."""
    import asyncio

    from .context import CellContext
    from .engines.base import SamplingSpec
    from .metering import ResourceMeter
    from .scoring import RewardBatcher

    emit = emit or (lambda kind, data: None)
    config, meta = state.config, state.meta
    cell = spec.cell
    engine = models.aengine
    sampling = SamplingSpec(**config.sampling_dict())
    technique = spec.build()

    def record(**fields) -> CellRecord:
        return CellRecord(
            run_id=state.run_id,
            cell=cell,
            technique=spec.name,
            params=spec.param_dict,
            engine_start_s=meta.get("engine_start", {}).get("engine_start_s"),
            is_baseline=cell == "plain",
            session=state.session,
            load=level.label,
            cell_repeat=cell_repeat,
            **fields,
        )

    def context(writer, skip=frozenset(), tag_cell=cell) -> CellContext:
        return CellContext(
            run_id=state.run_id,
            cell=tag_cell,
            technique=spec.name,
            engine=engine,
            sampling=sampling,
            writer=writer,
            epoch=state.epoch,
            repeats=config.repeats,
            scorer=models.scorer,
            eval_scorer=models.eval_scorer,
            skip_answers=skip,
            options={"seed": config.seed, "constitution": config.constitution},
            session=state.session,
            load=level.label,
            cell_repeat=cell_repeat,
            batcher=RewardBatcher(models.scorer, max_pairs=config.score_max_pairs, max_wait_s=config.score_max_wait_ms / 1000)
            if models.scorer is not None
            else None,
        )

    ctx = None
    warm: dict[str, Any] = {}
    try:
        if warmup and config.warmup_count(level, len(state.prompts) * config.repeats) > 0:
            # Warm-up at the cell's real shapes: its own first prompts, same technique, same
            # load pattern, reward model included; rows discarded. A fresh CUDA context's
            # one-off costs (kernel loading, allocator growth, autotuning) land here.
            wctx = context(_NullWriter(), tag_cell=f"warmup:{cell}")
            winsts = wctx.expand(state.prompts)[: config.warmup_count(level, len(state.prompts) * config.repeats)]
            t0 = time.monotonic()
            asyncio.run(_drive_unit(level, winsts, technique, wctx, config, None))
            warm = {"answers": len(winsts), "wall_s": time.monotonic() - t0}
        # Same starting state for every unit: drop the prefix cache, so order never changes
        # another unit's numbers (the warm-up above filled it with this cell's prompts).
        engine.reset_prefix_cache()
        ctx = context(state.writer, skip=_done_answers(state.run_dir, cell, level.label, cell_repeat))
        insts = ctx.expand(state.prompts)
        total = len(insts) + len(ctx.skip_answers)
        emit("unit_start", {"cell": cell, "load": level.label, "cell_repeat": cell_repeat, "total": total, "done": len(ctx.skip_answers)})
        before = _counters(engine)
        t0 = time.monotonic()
        # meter_factory: bench/fidelity.py's diagnostic arms swap the meter (None: no meter; run_instrumented
        # in bench/fidelity_overhead.py).
        import contextlib

        meter = ResourceMeter() if meter_factory is None else meter_factory()
        with meter if meter is not None else contextlib.nullcontext():
            drive_res, peaks = asyncio.run(_drive_unit(level, insts, technique, ctx, config, emit, total=total))
        t1 = time.monotonic()
        after = _counters(engine)
        n_eval = ctx.run_eval()
        n_scored = ctx.run_scoring(models.refusal_judge)
        stats = drive_res.stats(level)
        if drive_res.timed_out:
            stats["error"] = f"level time cap {config.level_timeout_s:g} s reached: {drive_res.finished} of {len(insts)} answers finished"
        rec = record(
            status="ok",
            answers=ctx.answers_written,
            cell_wall_s=t1 - t0,
            meter=_reading(meter, external=_external_server(models)) if meter is not None else {},
            engine_stats={**_counter_delta(before, after), **peaks, "eval_answers": n_eval, "scored_answers": n_scored},
            t_start_s=t0 - state.epoch,
            t_end_s=t1 - state.epoch,
            resumed_answers=len(ctx.skip_answers),
            warmup=warm,
            load_stats=stats,
            engine_counters={"before": before, "after": after},
            score_batches=list(ctx.batcher.batches) if ctx.batcher is not None else [],
        )
        state.writer.cell(rec)
        emit("cell_done", {"cell": cell, "load": level.label, "cell_repeat": cell_repeat, "wall_s": t1 - t0, "answers": ctx.answers_written})
        return rec
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as exc:  # one unit's failure never loses the others
        err = f"{type(exc).__name__}: {exc}"
        rec = record(status="failed", answers=ctx.answers_written if ctx else 0, cell_wall_s=0.0, error=err, warmup=warm)
        state.writer.cell(rec)
        meta.setdefault("failures", []).append({"cell": cell, "load": level.label, "cell_repeat": cell_repeat, "error": err, "traceback": traceback.format_exc()})
        emit("cell_failed", {"cell": cell, "load": level.label, "cell_repeat": cell_repeat, "error": err})
        return rec


async def _drive_unit(level, insts, technique, ctx, config: RunConfig, emit, total: int | None = None):
    """Release the unit's answers by the load level; sample engine gauges every 0.5 s."""
    import asyncio

    from .load import drive

    done = [total - len(insts)] if total is not None else [0]

    def on_done(inst) -> None:
        done[0] += 1
        if emit:
            emit("answer_done", {"cell": ctx.cell, "load": ctx.load, "cell_repeat": ctx.cell_repeat, "done": done[0], "total": total})

    peaks: dict[str, float] = {}
    stop = asyncio.Event()

    async def sample_gauges() -> None:
        # Engine gauges (KV-cache usage, waiting requests) peak during a level: sampled at 2 Hz,
        # cheap next to the engine's own work (the fidelity bench measured the meter's cost).
        while not stop.is_set():
            snap = _counters(ctx.engine)
            for k in GAUGES:
                # engines that track a gauge's peak between reads (vLLM) report `<gauge>_peak`
                vals = [v for v in (snap.get(k), snap.get(k + "_peak")) if isinstance(v, (int, float))]
                if vals:
                    peaks[k + "_peak"] = max([peaks.get(k + "_peak", vals[0]), *vals])
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    sampler = asyncio.ensure_future(sample_gauges()) if emit is not None else None
    try:
        res = await drive(
            level,
            insts,
            lambda inst: technique.answer(inst, ctx),
            seed=config.seed,
            timeout_s=config.level_timeout_s,
            on_release=ctx.arrived,
            on_done=on_done,
        )
    finally:
        stop.set()
        if sampler is not None:
            await sampler
        if ctx.batcher is not None:
            await ctx.batcher.aclose()
    return res, peaks


GAUGES = ("kv_cache_usage", "num_requests_waiting", "num_requests_running")
CUMULATIVE = ("prefix_cache_queries", "prefix_cache_hits")


def _counters(engine) -> dict[str, Any]:
    fn = getattr(engine, "counters", None)
    if fn is None:
        return {}
    try:
        return dict(fn() or {})
    except Exception:  # counters are diagnostics; never fail a unit over them
        return {}


def _counter_delta(before: dict, after: dict) -> dict[str, Any]:
    out = {}
    for k in CUMULATIVE:
        if isinstance(before.get(k), (int, float)) and isinstance(after.get(k), (int, float)):
            out[k] = after[k] - before[k]
    return out


def close_run(state: RunState, models: Models | None, status: str) -> None:
    """Step 4: final run.json, summary and plots rebuilt, engine and reward models closed."""
    meta = state.meta
    meta["status"] = status
    meta["finished_at"] = provenance.now_iso()
    write_json_atomic(state.run_dir / RUN_JSON, meta)
    state.writer.close()
    try:
        from .report import write_plots, write_summary

        write_plots(state.run_dir, write_summary(state.run_dir))
    except Exception as exc:  # a report failure never loses the rows already written
        warnings.warn(f"could not rebuild summary/plots: {exc}", RuntimeWarning)
    try:
        if models is not None:
            _close_models(models)
    finally:
        # again: warnings raised while rebuilding the report or closing the engines are events too
        write_json_atomic(state.run_dir / RUN_JSON, meta)


def _close_models(models: Models) -> None:
    models.close_async()
    try:
        if models.owns_engine and models.engine is not None:
            models.engine.close()
    finally:
        if models.server is not None:
            # the server's whole process group (the engine core runs as child processes)
            models.server.__exit__(None, None, None)
    for rm in (models.scorer, models.eval_scorer, models.refusal_judge):
        if rm is not None and hasattr(rm, "close"):
            try:
                rm.close()
            except Exception:
                pass


def profile(
    config: RunConfig,
    *,
    resume: str | Path | None = None,
    on_event: Event | None = None,
    engine=None,
    scorer=None,
    eval_scorer=None,
    restart_dead_engine: bool | None = None,
) -> RunResult:
    """Run every unit of `config` (cell x load level x cell repeat) and write the run directory.

    `engine`, `scorer`, `eval_scorer` may be injected (tests, library users who share one engine);
    otherwise they are built from the config. With `resume`, the run directory's config must
    match (apart from --out) and finished units/answers are skipped. Order: for each load level,
    for each cell repeat, every cell in turn (plain first), so drift shows up as spread across
    repeats rather than as a tax.
    """
    emit = on_event or (lambda kind, data: None)
    state = open_run(config, resume=resume, check_rewards=scorer is None, emit=emit)
    # Warnings raised while the run is open become run.json events (run_events.py); the filters
    # are restored afterwards. NVML missing (any CPU machine) is dropped: the CLI states it once
    # in words and every row carries nvml_reason; the meter's per-cell warning would repeat it.
    with WarningEvents(state.meta.setdefault("events", []), now=provenance.now_iso, session=state.session,
                       ignore=("NVML unavailable",)):
        return _profile_units(state, config, emit, engine=engine, scorer=scorer, eval_scorer=eval_scorer,
                              restart_dead_engine=restart_dead_engine)


def _profile_units(state: RunState, config: RunConfig, emit: Event, **models_kw) -> RunResult:
    done = done_units(state.run_dir)
    plan = [
        (spec, level, k)
        for level in config.load_levels
        for k in range(config.cell_repeats)
        for spec in config.cells
    ]
    todo = [u for u in plan if (u[0].cell, u[1].label, u[2]) not in done]
    ok: list[str] = []
    failed: list[str] = []
    models = None
    status = "crashed"
    try:
        if todo:
            models = start_models(state, emit=emit, **models_kw)
        warmed: set[tuple[str, str]] = {(c, lv) for c, lv, _ in done}
        for spec, level, k in todo:
            emit("cell_start", {"cell": spec.cell, "load": level.label, "cell_repeat": k})
            first = (spec.cell, level.label) not in warmed
            rec = run_unit(state, models, spec, level, k, warmup=first, emit=emit)
            warmed.add((spec.cell, level.label))
            if rec.status != "ok":
                failed.append(spec.cell)
                if models.restart and not _engine_alive(models.engine, config):
                    emit("status", {"msg": "engine died; restarting it for the next cell"})
                    models.close_async()
                    models.engine = _restart(models.engine, config, state.meta, emit)
            write_json_atomic(state.run_dir / RUN_JSON, state.meta)
            try:
                from .report import write_summary

                write_summary(state.run_dir)
            except Exception as exc:  # the rows are safe; the table is rebuilt at the end or by `report`
                warnings.warn(f"could not rebuild summary.csv after {spec.cell}: {exc}", RuntimeWarning)
        done = done_units(state.run_dir)
        for spec in config.cells:
            units = [(spec.cell, lv.label, k) for lv in config.load_levels for k in range(config.cell_repeats)]
            (ok if all(u in done for u in units) else failed).append(spec.cell)
        failed = list(dict.fromkeys(c for c in failed if c not in ok))
        status = "finished"
        return RunResult(state.run_dir, state.run_id, "finished", tuple(ok), tuple(failed))
    except KeyboardInterrupt:
        status = "interrupted"
        raise RunInterrupted(state.run_dir) from None
    finally:
        close_run(state, models, status)


def _external_server(models: Models) -> bool:
    """An OpenAI-compatible server costtax did not start: its processes are not in our tree."""
    return models.server is None and getattr(models.engine, "name", None) == "openai"


def _reading(meter, *, external: bool = False) -> dict[str, Any]:
    r = meter.result()
    d = r.as_dict() if r is not None else {}
    if external and d:
        # A server costtax did not start runs outside the process tree: on this machine its work
        # would count as other tenants' CPU, so the contention gauge cannot tell it from
        # neighbours. Left empty rather than wrong (the CPU and memory columns say "process tree").
        d["foreign_cpu_share"] = None
    return d


def _warm(engine, sampling) -> None:
    """A liveness probe (after a failed unit): two tiny requests through the sync API."""
    from .engines.base import GenRequest, SamplingSpec

    # Two requests, a few tokens: exercises the batched prefill/decode/sampling paths, so a fresh
    # CUDA context's one-off costs (kernel loading, allocator growth) land outside the cell.
    engine.generate(
        [
            GenRequest("warmup", ({"role": "user", "content": "Say hello."},), n=2),
            GenRequest("warmup", ({"role": "user", "content": "Name three colours, please."},), n=1),
        ],
        SamplingSpec(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=8, seed=sampling.seed),
    )


def _engine_alive(engine, config: RunConfig) -> bool:
    from .engines.base import SamplingSpec

    try:
        _warm(engine, SamplingSpec(**config.sampling_dict()))
        return True
    except Exception:
        return False


def _restart(engine, config: RunConfig, meta: dict, emit: Event):
    from .models import resolve_model

    try:
        engine.close()
    except Exception:
        pass
    new = _make_engine(config, resolve_model(config.model))
    start_s = new.start()
    meta.setdefault("events", []).append({"t": provenance.now_iso(), "event": "engine_restart", "engine_start_s": start_s})
    return new


def _reward_models(config: RunConfig, meta: dict, scorer, eval_scorer, emit: Event, policy=None):
    """Selection scorer when a cell needs one; evaluation scorer: --eval-reward-model, or the
    selection reward model as a proxy (labelled so), or none with --eval-reward-model none.
    `policy`: the run's engine (`served` scores through its server)."""
    needs_selection = any(getattr(c.build(), "needs_reward_model", False) for c in config.cells)
    eval_spec = config.eval_reward_model
    if scorer is None and (needs_selection or eval_spec is None):
        from .rewards import make_reward_model

        emit("status", {"msg": f"loading reward model {config.reward_model}"})
        scorer = make_reward_model(config.reward_model, trust_remote_code=config.trust_remote_code, policy=policy)
        meta["reward_model"] = {"spec": config.reward_model, "load_s": scorer.load(), **scorer.provenance()}
        if config.judge_calibration:
            meta["reward_model"]["pairs_accuracy"] = _pairs_accuracy(scorer, emit)
            # agreement with public human labels nobody here wrote (held-out part; cached)
            meta["reward_model"]["public_calibration"] = _public_calibration(scorer, emit)
    if eval_scorer is None:
        if eval_spec is None:
            eval_scorer = scorer
            meta["eval_reward"] = {"source": "proxy", "spec": config.reward_model}
        elif eval_spec == "none":
            meta["eval_reward"] = {"source": "none"}
        else:
            from .rewards import make_reward_model

            eval_scorer = make_reward_model(eval_spec, trust_remote_code=config.trust_remote_code, policy=policy)
            meta["eval_reward"] = {"source": "eval", "spec": eval_spec, "load_s": eval_scorer.load(), **eval_scorer.provenance()}
    else:
        meta["eval_reward"] = {"source": "eval" if eval_scorer is not scorer else "proxy", "spec": getattr(eval_scorer, "name", "injected")}
    return scorer, eval_scorer


def _pairs_accuracy(scorer, emit: Event) -> dict[str, Any]:
    """The reward model's accuracy on the shipped good/bad pairs, cached per (model, template,
    pairs file): it costs minutes of CPU and only changes when one of those changes."""
    import hashlib

    from .models import cache_root
    from .rewards.calibration import judge_accuracy

    prov = scorer.provenance()
    keyed = {k: prov.get(k) for k in ("name", "kind", "model_dir", "model_source", "judge_template_sha", "answer_token_ids", "dtype")}
    pairs = Path(__file__).parent / "rewards" / "data" / "judge_pairs.jsonl"
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    if pairs.exists():
        h.update(pairs.read_bytes())
    path = cache_root() / "calibration" / f"{h.hexdigest()[:16]}.json"
    return _cached(path, lambda: judge_accuracy(scorer), emit, "measuring the reward model on the shipped good/bad pairs (cached afterwards)")


def _cached(path: Path, compute, emit: Event, msg: str) -> dict[str, Any]:
    """A calibration result from its cache file, or computed (announced) and cached."""
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            data["cached"] = str(path)
            return data
        except ValueError:
            pass
    emit("status", {"msg": msg})
    data = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return data


def _public_calibration(scorer, emit: Event) -> dict[str, Any]:
    """The reward model on public human-labelled responses (rewards.calibration.public_calibration:
    AUC and accuracy on a held-out part of PyRIT's labelled responses to harmful requests),
    cached per (model, template, data package version, calibration settings) like
    _pairs_accuracy. Without the data package: {"skipped": <why, with the pip command>}."""
    import hashlib

    from .models import cache_root
    from .rewards import public_sets
    from .rewards.calibration import PUBLIC_CALIBRATION_VERSION, PUBLIC_N, public_calibration

    try:
        public_sets.data_dir()
    except ConfigError as e:
        return {"skipped": str(e), "dataset": public_sets.DATASET}
    prov = scorer.provenance()
    fields = ("name", "kind", "model_dir", "model_source", "judge_template_sha", "answer_token_ids", "dtype", "refusal_margin")
    keyed = {k: prov.get(k) for k in fields}
    keyed.update(
        data=public_sets.DATASET,
        version=public_sets.package_version(),
        n=PUBLIC_N,
        max_chars=public_sets.MAX_RESPONSE_CHARS,
        calibration=PUBLIC_CALIBRATION_VERSION,
    )
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    path = cache_root() / "calibration" / f"public-{h.hexdigest()[:16]}.json"
    return _cached(path, lambda: public_calibration(scorer), emit,
                   f"measuring the reward model on public human labels ({public_sets.DATASET}; cached afterwards)")
