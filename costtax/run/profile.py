"""`profile()`: the run, in named steps. `rundir.open_run` (validate, create or reopen the run
directory), `startup.start_models` (engine or served engine, reward models; cold start measured
apart), `unit.run_unit` for every unit (one cell at one load level, one cell repeat) and
`rundir.close_run`. Order: for each load level, for each cell repeat, every cell in turn, plain
first, so drift shows up as spread across repeats rather than as a tax.

The steps stay importable from here (bench/fidelity_overhead.py runs `run_unit` on its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import provenance
from ..config import RunConfig
from ..errors import CosttaxError
from .run_events import WarningEvents
from .rundir import Event, RunState, close_run, config_from_run, done_units, no_events, open_run, rebuild_summary, save_meta
from .startup import StartedModels, restart_if_dead, start_models
from .unit import run_unit

__all__ = [
    "RunResult", "RunInterrupted", "profile", "RunState", "StartedModels", "open_run", "start_models", "run_unit",
    "close_run", "config_from_run",
]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    run_id: str
    status: str  # finished | interrupted
    cells_ok: tuple[str, ...]
    cells_failed: tuple[str, ...]

    def summary(self):
        """The summary table as a pandas DataFrame (built by costtax.report)."""
        from ..report import load_summary

        return load_summary(self.run_dir)


class RunInterrupted(CosttaxError):
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(f"interrupted; finished rows are saved. Resume with: costtax profile --resume {run_dir}")


def profile(
    config: RunConfig,
    *,
    resume: str | Path | None = None,
    on_event: Event | None = None,
    engine=None,
    scorer=None,
    eval_scorer=None,
    restart_dead_engine: bool | None = None,
    baseline_from: str | Path | None = None,
) -> RunResult:
    """Run every unit of `config` (cell x load level x cell repeat) and write the run directory.

    `engine`, `scorer`, `eval_scorer` may be injected (tests, library users who share one engine);
    otherwise they are built from the config. With `resume`, the run directory's config must
    match (apart from --out) and finished units/answers are skipped. With `baseline_from` (a run
    directory), that run's plain cell is reused instead of run again (costtax/run/baseline.py).
    """
    emit = on_event or no_events
    if baseline_from is not None:
        from .baseline import seed_from_baseline

        resume = seed_from_baseline(config, baseline_from)
    state = open_run(config, resume=resume, check_rewards=scorer is None, emit=emit)
    # Warnings raised while the run is open become run.json events (run_events.py); the filters
    # are restored afterwards. NVML missing (any CPU machine) is dropped: the CLI states it once
    # in words and every row carries nvml_reason; the meter's per-cell warning would repeat it.
    with WarningEvents(state.meta.setdefault("events", []), now=provenance.now_iso, session=state.session,
                       ignore=("NVML unavailable",)):
        return _profile_units(state, emit, engine=engine, scorer=scorer, eval_scorer=eval_scorer,
                              restart_dead_engine=restart_dead_engine)


def _profile_units(state: RunState, emit: Event, **models_kw) -> RunResult:
    """The loop over units: for each load level, each cell repeat, each cell. A unit a session
    of this run already finished is skipped; the first unit of a (cell, level) warms up."""
    config = state.config
    done = done_units(state.run_dir)
    plan = [
        (spec, level, k)
        for level in config.load_levels
        for k in range(config.cell_repeats)
        for spec in config.cells
    ]
    todo = [(spec, level, k) for spec, level, k in plan if (spec.cell, level, k) not in done]
    search = config.search
    if search is not None:  # --load search: the units come round by round (costtax.load.search)
        from .search_units import SearchUnits

        todo = SearchUnits(state.run_dir, config, search)
    failed: list[str] = []
    models = None
    status = "crashed"
    try:
        if todo:
            models = start_models(state, emit=emit, **models_kw)
        warmed = {(cell, level) for cell, level, _ in done}
        for spec, level, k, *rest in todo:
            probe = rest[0] if rest else 0  # a capacity search's re-probe of a bracketing level
            emit("cell_start", {"cell": spec.cell, "load": level.label, "cell_repeat": k})
            # a search warms each cell up once, before its first probe
            first = (spec.cell, level) not in warmed and not (search and any(c == spec.cell for c, _ in warmed))
            rec = run_unit(state, models, spec, level, k, warmup=first, emit=emit, probe=probe)
            warmed.add((spec.cell, level))
            if rec.status != "ok":
                failed.append(spec.cell)
                restart_if_dead(state, models, emit)
            save_meta(state)
            rebuild_summary(state, after=spec.cell, emit=emit)
        ok, failed = _cell_outcomes(state, failed)
        status = "finished"
        return RunResult(state.run_dir, state.run_id, "finished", ok, failed)
    except KeyboardInterrupt:
        status = "interrupted"
        raise RunInterrupted(state.run_dir) from None
    finally:
        close_run(state, models, status, emit)


def _search_units(state: RunState, cell: str) -> list[tuple[str, str, int]]:
    """The units a --load search ran for `cell` (its probes x cell repeats)."""
    from .search_units import SearchUnits

    return SearchUnits(state.run_dir, state.config, state.config.search).units_of(cell)


def _cell_outcomes(state: RunState, failed_now: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A cell is ok when every one of its units (levels x cell repeats) finished in some session."""
    config = state.config
    done = done_units(state.run_dir)
    ok: list[str] = []
    failed = list(failed_now)
    for spec in config.cells:
        units = _search_units(state, spec.cell) if config.search else [(spec.cell, level, k) for level in config.load_levels for k in range(config.cell_repeats)]
        (ok if all(u in done for u in units) else failed).append(spec.cell)
    return tuple(ok), tuple(dict.fromkeys(c for c in failed if c not in ok))
