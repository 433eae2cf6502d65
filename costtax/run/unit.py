"""The unit runner: one cell at one load level, one cell repeat. Warm-up (before the first repeat
of a cell and level, rows discarded), the prefix cache reset, one metered window in which the load
level releases the answers, engine gauges sampled at 2 Hz, then evaluation scoring outside the
window and one cells.jsonl record. Rows are written as they finish."""
from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..load.levels import LOADED_MODES, LoadLevel
from ..phases import phase
from ..store.records import CellRecord
from .rundir import Event, RunState, done_answers, evaluation_backlog, no_events
from .startup import StartedModels, meter_reading

GAUGES = ("kv_cache_usage", "num_requests_waiting", "num_requests_running")
CUMULATIVE = ("prefix_cache_queries", "prefix_cache_hits")


class _NullWriter:
    """Warm-up rows go nowhere: they are never part of the statistics."""

    def call(self, rec) -> None:
        pass

    def answer(self, rec) -> None:
        pass

    def scored(self, row) -> None:
        pass


def run_unit(
    state: RunState, models: StartedModels, spec, level: LoadLevel, cell_repeat: int = 0, *, warmup: bool = True,
    emit: Event | None = None, meter_factory=None, probe: int = 0,
) -> CellRecord:
    """One cell at one load level, one cell repeat. Writes its calls, answers and one cells.jsonl
    record; returns that record. Raises only for ConfigError and KeyboardInterrupt: any other
    failure is recorded as a failed unit (finished rows kept). `meter_factory`: bench/fidelity.py's
    diagnostic arms swap the meter (returning None: no meter)."""
    from ..techniques.context import CellContext
    from ..engines.base import SamplingSpec
    from ..metering import ResourceMeter
    from ..rewards.batcher import RewardBatcher

    emit = emit or no_events
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
            probe=probe,
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
            options={"seed": config.seed, "constitution": state.constitution},
            session=state.session,
            level=level,
            cell_repeat=cell_repeat,
            probe=probe,
            batcher=RewardBatcher(models.scorer, max_pairs=config.score_max_pairs, max_wait_s=config.score_max_wait_ms / 1000,
                                  gather_s=config.score_gather_ms / 1000)
            if models.scorer is not None
            else None,
        )

    ctx = None
    warm: dict[str, Any] = {}
    n_warm = config.warmup_count(level, len(state.prompts) * config.repeats) if warmup else 0
    try:
        if n_warm > 0:
            # Warm-up at the cell's real shapes: its own first prompts, same technique, same
            # load pattern, reward model included; rows discarded. A fresh CUDA context's
            # one-off costs (kernel loading, allocator growth, autotuning) land here.
            wctx = context(_NullWriter(), tag_cell=f"warmup:{cell}")
            winsts = wctx.expand(state.prompts)[:n_warm]
            t0 = time.monotonic()
            with phase(emit, f"warm-up {cell} (discarded)", total=len(winsts), unit="answers") as ph:
                asyncio.run(_drive_unit(level, winsts, technique, wctx, config, None, on_answer=ph.update))
            warm = {"answers": len(winsts), "wall_s": time.monotonic() - t0}
        # Same starting state for every unit: drop the prefix cache, so order never changes
        # another unit's numbers (the warm-up above filled it with this cell's prompts).
        engine.reset_prefix_cache()
        ctx = context(state.writer, skip=done_answers(state.run_dir, cell, level, cell_repeat, probe))
        search = config.search
        insts = ctx.expand(state.prompts, answers=search.planned_answers(level.value) if search else None)
        # answers an earlier session finished but never evaluated (killed before this unit's
        # scoring pass): evaluated below with this session's, once; not regenerated
        backlog_eval, backlog_scored = ctx.adopt_backlog(state.prompts, evaluation_backlog(state.run_dir, cell, level, cell_repeat, probe)) \
            if ctx.skip_answers else (0, 0)
        total = len(insts) + len(ctx.skip_answers)
        emit("unit_start", {"cell": cell, "load": level.label, "cell_repeat": cell_repeat, "total": total, "done": len(ctx.skip_answers)})
        before = _counters(engine)
        t0 = time.monotonic()
        meter = ResourceMeter() if meter_factory is None else meter_factory()
        with meter if meter is not None else contextlib.nullcontext():
            from ..load.oversaturation import level_watch

            watch = level_watch(level, total, slo_p95_s=search.slo_p95_s if search else None, slope=config.oversaturation_stop)
            # best-of-N style cells score with the reward model inside the answer: workers have
            # none, so those units run in this process (their client record says workers 1)
            if config.client_workers > 1 and level.mode in LOADED_MODES and insts and not getattr(technique, "needs_reward_model", False):
                drive_res, peaks, client = _drive_split(level, insts, spec, ctx, config, emit, total=total, watch=watch)
            else:
                drive_res, peaks, client = asyncio.run(_drive_unit(level, insts, technique, ctx, config, emit, total=total, watch=watch, gauge=True))
        t1 = time.monotonic()
        after = _counters(engine)
        with phase(emit if ctx.pending_scoring() else None, f"scoring {cell}'s answers (not metered)",
                   total=ctx.pending_scoring(), unit="answers") as ph:
            n_eval = ctx.run_eval(progress=ph.update)
            n_scored = ctx.run_scoring(models.refusal_judge, progress=lambda k: ph.update(n_eval + k))
        stats = drive_res.stats(level)
        if drive_res.stop_reason:
            stats["error"] = f"stopped early: {drive_res.stop_reason}"
        if drive_res.timed_out:
            stats["error"] = f"level time cap {config.level_timeout_s:g} s reached: {drive_res.finished} of {len(insts)} answers finished"
        rec = record(
            status="ok",
            answers=ctx.answers_written,
            cell_wall_s=t1 - t0,
            meter=meter_reading(meter, external=models.external_server) if meter is not None else {},
            engine_stats={**_counter_delta(before, after), **peaks, "eval_answers": n_eval, "scored_answers": n_scored,
                          "resumed_eval_answers": backlog_eval, "resumed_scored_answers": backlog_scored},
            t_start_s=t0 - state.epoch,
            t_end_s=t1 - state.epoch,
            resumed_answers=len(ctx.skip_answers),
            warmup=warm,
            load_stats=stats,
            engine_counters={"before": before, "after": after},
            score_batches=list(ctx.batcher.batches) if ctx.batcher is not None else [],
            client=client,
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


async def _drive_unit(level: LoadLevel, insts, technique, ctx, config: RunConfig, emit, total: int | None = None, on_answer=None, watch=None,
                      gauge: bool = False):
    """Release the unit's answers by the load level; sample engine gauges every 0.5 s. Returns
    (drive result, gauge peaks, the client's gauges: costtax/metering/client_gauge.py, {} unless `gauge`)."""
    from ..metering.client_gauge import ClientGauge
    from ..load.levels import drive

    done = [total - len(insts)] if total is not None else [0]

    flight = [0]  # answers released and not finished: the batcher's gather policy waits for them

    offset = done[0]  # answers of the unit an earlier session finished: admissions continue after them

    def on_admit(inst, admission: int, slot) -> None:
        ctx.admitted(inst, offset + admission, slot)

    def on_release(inst, t: float) -> None:
        flight[0] += 1
        ctx.arrived(inst, t)

    if ctx.batcher is not None:
        ctx.batcher.in_flight = lambda: flight[0]

    def on_done(inst) -> None:
        flight[0] -= 1
        done[0] += 1
        if emit:
            emit("answer_done", {"cell": ctx.cell, "load": ctx.load, "cell_repeat": ctx.cell_repeat, "done": done[0], "total": total})
        if on_answer is not None:
            on_answer(done[0])

    peaks: dict[str, float] = {}
    stop = asyncio.Event()

    async def sample_gauges() -> None:
        # Engine gauges (KV-cache usage, waiting requests) peak during a level: sampled at 2 Hz,
        # cheap next to the engine's own work (the fidelity bench measured the meter's cost).
        while not stop.is_set():
            _update_peaks(peaks, _counters(ctx.engine))
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    sampler = asyncio.ensure_future(sample_gauges()) if emit is not None else None
    client_gauge = ClientGauge(ctx.engine) if gauge else None
    try:
        with client_gauge if client_gauge is not None else contextlib.nullcontext():
            res = await drive(
                level,
                insts,
                lambda inst: technique.answer(inst, ctx),
                seed=config.seed,
                timeout_s=config.level_timeout_s,
                on_release=on_release,
                on_done=on_done,
                on_admit=on_admit,
                watch=watch,
            )
    finally:
        stop.set()
        if sampler is not None:
            await sampler
        if ctx.batcher is not None:
            await ctx.batcher.aclose()
    return res, peaks, (client_gauge.result() if client_gauge is not None else {})


def _update_peaks(peaks: dict[str, float], snap: dict[str, Any]) -> None:
    for k in GAUGES:
        # engines that track a gauge's peak between reads (vLLM) report `<gauge>_peak`
        vals = [v for v in (snap.get(k), snap.get(k + "_peak")) if isinstance(v, (int, float))]
        if vals:
            peaks[k + "_peak"] = max([peaks.get(k + "_peak", vals[0]), *vals])


def _drive_split(level: LoadLevel, insts, spec, ctx, config: RunConfig, emit, total: int, watch=None):
    """The measured unit's level sent from --client-workers processes (costtax/run/client_workers.py);
    the same (drive result, gauge peaks, client gauges) as _drive_unit."""
    from .client_workers import run_split

    done = [total - len(insts)]
    peaks: dict[str, float] = {}

    def on_done() -> None:
        done[0] += 1
        if emit:
            emit("answer_done", {"cell": ctx.cell, "load": ctx.load, "cell_repeat": ctx.cell_repeat, "done": done[0], "total": total})

    res, client = run_split(level, list(insts), spec=spec, ctx=ctx, engine=ctx.engine, workers=config.client_workers, seed=config.seed,
                            timeout_s=config.level_timeout_s, watch=watch, on_done=on_done,
                            sample=lambda: _update_peaks(peaks, _counters(ctx.engine)))
    return res, peaks, client


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
