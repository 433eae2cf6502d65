"""The orchestration loop: one engine per run, one metered window per cell, rows written as they
finish. The run directory is the single source of truth; report.py rebuilds every table from it.
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


def _done_cells(run_dir: Path) -> set[str]:
    return {r["cell"] for r in read_jsonl(run_dir / CELLS) if r.get("status") == "ok"}


def _done_answers(run_dir: Path, cell: str) -> frozenset[str]:
    return frozenset(r["answer_id"] for r in read_jsonl(run_dir / "answers.jsonl") if r.get("cell") == cell)


def config_from_run(run_dir: Path) -> RunConfig:
    data = read_run_json(run_dir)["config"]
    fields = RunConfig.__dataclass_fields__
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields and k != "cells"}
    return RunConfig(**kwargs)


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    ignore = {"out"}
    return [f"{k}: {da.get(k)!r} -> {db.get(k)!r}" for k in sorted(set(da) | set(db)) if k not in ignore and da.get(k) != db.get(k)]


def _make_engine(config: RunConfig, model_dir: Path):
    from .engines import make_engine

    kwargs: dict[str, Any] = dict(seed=config.seed, max_model_len=config.max_model_len, trust_remote_code=config.trust_remote_code)
    if config.engine == "vllm":
        kwargs["enable_prefix_caching"] = config.prefix_caching
    return make_engine(config.engine, str(model_dir), **kwargs)


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
    """Run every cell of `config` and write the run directory. Returns when all cells ran.

    `engine`, `scorer`, `eval_scorer` may be injected (tests, library users who share one engine);
    otherwise they are built from the config. With `resume`, the run directory's config must
    match (apart from --out) and finished cells/answers are skipped.
    """
    from .preflight import run_preflight

    emit = on_event or (lambda kind, data: None)
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
    pre = run_preflight(config, run_dir=run_dir, resume=resume is not None, check_rewards=scorer is None)
    run_dir.mkdir(parents=True, exist_ok=True)

    sampling_d = config.sampling_dict()
    meta = meta or {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "config": config.to_dict(),
        "sampling": sampling_d,
        "started_at": provenance.now_iso(),
        "provenance": {"machine": provenance.machine(), "versions": provenance.versions(), "git_commit": provenance.git_commit()},
        "prompts": {"count": len(pre.prompts), "sets": sorted({p.prompt_set for p in pre.prompts})},
        "cells": [c.cell for c in config.cells],
        "baseline_cell": "plain",
        "events": [],
    }
    meta["status"] = "running"
    # Clock origin of every t_*_s in the rows this process writes (time.monotonic()); a resumed
    # run starts a new origin, recorded as its own event.
    epoch = time.monotonic()
    session = secrets.token_hex(4)
    meta.setdefault("events", []).append(
        {"t": provenance.now_iso(), "event": "resume" if resume else "start", "session": session}
    )
    write_json_atomic(run_dir / RUN_JSON, meta)
    emit("run_dir", {"run_dir": str(run_dir), "run_id": run_id})

    from .engines.base import SamplingSpec
    from .metering import ResourceMeter
    from .models import resolve_model
    from .report import write_summary

    # NVML missing (any CPU machine): say so once per run, not once per cell.
    warnings.filterwarnings("once", message="NVML unavailable")
    writer = RunWriter(run_dir)
    done = _done_cells(run_dir)
    todo = [c for c in config.cells if c.cell not in done]
    owns_engine = engine is None
    restart = owns_engine if restart_dead_engine is None else restart_dead_engine
    ok, failed = [c.cell for c in config.cells if c.cell in done], []
    try:
        if todo:
            if engine is None:
                emit("status", {"msg": f"resolving model {config.model}"})
                model_dir = resolve_model(config.model)
                engine = _make_engine(config, model_dir)
                emit("status", {"msg": f"starting {config.engine} engine (cold start is measured apart)"})
            with ResourceMeter() as start_meter:
                engine_start_s = engine.start()
            meta["engine"] = engine.provenance()
            meta["engine_start"] = {"engine_start_s": engine_start_s, "meter": _reading(start_meter)}
            scorer, eval_scorer = _reward_models(config, meta, scorer, eval_scorer, emit)
            write_json_atomic(run_dir / RUN_JSON, meta)
        sampling = SamplingSpec(**sampling_d)
        for spec in todo:
            cell = spec.cell
            emit("cell_start", {"cell": cell})
            ctx = None

            def cell_record(**fields) -> CellRecord:
                return CellRecord(
                    run_id=run_id,
                    cell=cell,
                    technique=spec.name,
                    params=spec.param_dict,
                    engine_start_s=meta.get("engine_start", {}).get("engine_start_s"),
                    is_baseline=cell == "plain",
                    session=session,
                    **fields,
                )

            try:
                from .context import CellContext

                technique = spec.build()
                # Same starting state for every cell: warm the engine, then drop the prefix
                # cache, so cell order never changes another cell's numbers.
                _warm(engine, sampling)
                engine.reset_prefix_cache()
                ctx = CellContext(
                    run_id=run_id,
                    cell=cell,
                    technique=spec.name,
                    engine=engine,
                    sampling=sampling,
                    writer=writer,
                    epoch=epoch,
                    repeats=config.repeats,
                    scorer=scorer,
                    eval_scorer=eval_scorer,
                    skip_answers=_done_answers(run_dir, cell),
                    options={"seed": config.seed, "constitution": config.constitution},
                    session=session,
                )
                t0 = time.monotonic()
                with ResourceMeter() as meter:
                    technique.run(list(pre.prompts), ctx)
                t1 = time.monotonic()
                n_eval = ctx.run_eval()
                writer.cell(
                    cell_record(
                        status="ok",
                        answers=ctx.answers_written,
                        cell_wall_s=t1 - t0,
                        meter=_reading(meter),
                        engine_stats={**ctx.engine_stats, "eval_answers": n_eval},
                        t_start_s=t0 - epoch,
                        t_end_s=t1 - epoch,
                        resumed_answers=len(ctx.skip_answers),
                    )
                )
                ok.append(cell)
                emit("cell_done", {"cell": cell, "wall_s": t1 - t0, "answers": ctx.answers_written})
            except KeyboardInterrupt:
                raise
            except ConfigError:
                raise
            except Exception as exc:  # one cell's failure never loses the others
                err = f"{type(exc).__name__}: {exc}"
                writer.cell(cell_record(status="failed", answers=ctx.answers_written if ctx else 0, cell_wall_s=0.0, error=err))
                meta.setdefault("failures", []).append({"cell": cell, "error": err, "traceback": traceback.format_exc()})
                failed.append(cell)
                emit("cell_failed", {"cell": cell, "error": err})
                if restart and not _engine_alive(engine, sampling):
                    emit("status", {"msg": "engine died; restarting it for the next cell"})
                    engine = _restart(engine, config, meta, emit)
            write_json_atomic(run_dir / RUN_JSON, meta)
            try:
                write_summary(run_dir)
            except Exception as exc:  # the rows are safe; the table is rebuilt at the end or by `report`
                warnings.warn(f"could not rebuild summary.csv after {cell}: {exc}", RuntimeWarning)
        meta["status"] = "finished"
        return RunResult(run_dir, run_id, "finished", tuple(ok), tuple(failed))
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        raise RunInterrupted(run_dir) from None
    finally:
        meta["finished_at"] = provenance.now_iso()
        if meta.get("status") == "running":
            meta["status"] = "crashed"
        write_json_atomic(run_dir / RUN_JSON, meta)
        writer.close()
        try:
            from .report import write_plots

            write_plots(run_dir, write_summary(run_dir))
        except Exception as exc:  # a report failure never loses the rows already written
            warnings.warn(f"could not rebuild summary/plots: {exc}", RuntimeWarning)
        if owns_engine and engine is not None:
            engine.close()
        for rm in (scorer, eval_scorer):
            if rm is not None and hasattr(rm, "close"):
                try:
                    rm.close()
                except Exception:
                    pass


def _reading(meter) -> dict[str, Any]:
    r = meter.result()
    return r.as_dict() if r is not None else {}


def _warm(engine, sampling) -> None:
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


def _engine_alive(engine, sampling) -> bool:
    try:
        _warm(engine, sampling)
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


def _reward_models(config: RunConfig, meta: dict, scorer, eval_scorer, emit: Event):
    """Selection scorer when a cell needs one; evaluation scorer: --eval-reward-model, or the
    selection reward model as a proxy (labelled so), or none with --eval-reward-model none."""
    needs_selection = any(c.name == "bon" for c in config.cells)
    eval_spec = config.eval_reward_model
    if scorer is None and (needs_selection or eval_spec is None):
        from .rewards import make_reward_model

        emit("status", {"msg": f"loading reward model {config.reward_model}"})
        scorer = make_reward_model(config.reward_model, trust_remote_code=config.trust_remote_code)
        meta["reward_model"] = {"spec": config.reward_model, "load_s": scorer.load(), **scorer.provenance()}
        if config.judge_calibration:
            meta["reward_model"]["pairs_accuracy"] = _pairs_accuracy(scorer, emit)
    if eval_scorer is None:
        if eval_spec is None:
            eval_scorer = scorer
            meta["eval_reward"] = {"source": "proxy", "spec": config.reward_model}
        elif eval_spec == "none":
            meta["eval_reward"] = {"source": "none"}
        else:
            from .rewards import make_reward_model

            eval_scorer = make_reward_model(eval_spec, trust_remote_code=config.trust_remote_code)
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
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            data["cached"] = str(path)
            return data
        except ValueError:
            pass
    emit("status", {"msg": "measuring the reward model on the shipped good/bad pairs (cached afterwards)"})
    data = judge_accuracy(scorer)
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
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            data["cached"] = str(path)
            return data
        except ValueError:
            pass
    emit("status", {"msg": f"measuring the reward model on public human labels ({public_sets.DATASET}; cached afterwards)"})
    data = public_calibration(scorer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return data
