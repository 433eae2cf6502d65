"""Model start-up for a run: the engine (in-process, a vLLM server costtax starts, or a remote
OpenAI-compatible server), its cold start measured apart, the reward models (with their cached
calibration), the refusal judge, idle power; the liveness probe and the restart of a dead engine;
closing all of it. `start_models` returns a StartedModels that the unit runner (unit.py) uses."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

from .. import provenance
from ..config import RunConfig
from ..errors import ConfigError
from ..phases import ENGINE_LOG, phase
from .rundir import Event, RunState, no_events, save_meta


@dataclass
class StartedModels:
    """What start_models started (or was given) for one run: the engine and the reward models."""

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

    @property
    def external_server(self) -> bool:
        """An OpenAI-compatible server costtax did not start: its processes are not in our tree."""
        return self.server is None and getattr(self.engine, "name", None) == "openai"

    def close_async(self) -> None:
        """Stop a batching worker this run added (never the engine it wraps)."""
        w = self._async
        self._async = None
        if w is not None and w is not self.engine and hasattr(w, "_worker"):
            w._worker.close()

    def close(self) -> None:
        """The batching worker, the engine (if ours), the server's process group, the reward models."""
        self.close_async()
        try:
            if self.owns_engine and self.engine is not None:
                self.engine.close()
        finally:
            if self.server is not None:
                # the server's whole process group (the engine core runs as child processes)
                self.server.__exit__(None, None, None)
        for rm in (self.scorer, self.eval_scorer, self.refusal_judge):
            if rm is not None and hasattr(rm, "close"):
                try:
                    rm.close()
                except Exception:
                    pass


def _as_async(engine):
    """Engines without `agenerate` (a sync batched engine) get the batching worker."""
    if hasattr(engine, "agenerate"):
        return engine
    from ..engines.batching import BatchingEngine

    return BatchingEngine(engine)


def meter_reading(meter, *, external: bool = False) -> dict[str, Any]:
    """A ResourceMeter's reading as a record field."""
    r = meter.result()
    d = r.as_dict() if r is not None else {}
    if external and d:
        # A server costtax did not start runs outside the process tree: on this machine its work
        # would count as other tenants' CPU, so the contention gauge cannot tell it from
        # neighbours. Left empty rather than wrong (the CPU and memory columns say "process tree").
        d["foreign_cpu_share"] = None
    return d


def _make_engine(config: RunConfig):
    from ..engines import make_engine
    from ..model_files import resolve_model

    kwargs: dict[str, Any] = dict(seed=config.seed, max_model_len=config.max_model_len, trust_remote_code=config.trust_remote_code)
    if config.engine == "vllm":
        kwargs["enable_prefix_caching"] = config.prefix_caching
    return make_engine(config.engine, str(resolve_model(config.model)), **kwargs)


def _remote_engine(config: RunConfig):
    """--engine openai --base-url URL: a server costtax did not start. The model is the server's
    name for it; the embedded default alias means 'the server's only model'."""
    from ..engines import make_engine
    from ..model_files import DEFAULT_MODEL

    model = None if config.model == DEFAULT_MODEL else config.model
    return make_engine("openai", model, base_url=config.base_url, seed=config.seed, max_model_len=config.max_model_len,
                       trust_remote_code=config.trust_remote_code)


def start_models(state: RunState, *, engine=None, scorer=None, eval_scorer=None, restart_dead_engine: bool | None = None,
                 emit: Event | None = None) -> StartedModels:
    """Build and start the engine (cold start measured apart), load reward models, measure idle
    power where NVML is there. Injected `engine`/`scorer`/`eval_scorer` are used as given."""
    from ..metering import ResourceMeter
    from ..model_files import resolve_model

    emit = emit or no_events
    config, meta = state.config, state.meta
    owns = engine is None
    injected_scorer = scorer
    server = None
    t_server = time.monotonic()
    if engine is None and config.serve:
        from ..engines import make_engine
        from ..engines.serve import ServedVllm
        from ..engines.server_record import RunJsonHooks
        from ..store.records import RUN_JSON

        with phase(emit, f"resolving model {config.model}"):
            model_dir = resolve_model(config.model)
        log = state.run_dir / "server.log"
        emit("status", {"msg": f"vLLM's OpenAI server for {config.model}: log {log}"})
        hooks = RunJsonHooks(meta, state.run_dir / RUN_JSON, state.session)  # run.json `servers`
        server = ServedVllm(model_dir, log, seed=config.seed, max_model_len=config.max_model_len,
                            enable_prefix_caching=config.prefix_caching, health_timeout_s=config.server_timeout_s,
                            serve_args=config.serve_args, on_spawn=hooks.spawned, on_stop=hooks.stopped)
        with phase(emit, "starting vLLM's OpenAI server (polling /health)", log=str(log), hint="launching the server process"):
            server.__enter__()
        engine = make_engine("openai", server.model_name, **server.engine_kwargs(), seed=config.seed)
    elif engine is None and config.engine == "openai":
        engine = _remote_engine(config)
        emit("status", {"msg": f"connecting to {config.base_url}"})
    elif engine is None:
        with phase(emit, f"resolving model {config.model}"):
            engine = _make_engine(config)
    try:
        with phase(emit, f"starting {getattr(engine, 'name', config.engine)} engine (cold start, measured apart)", log=ENGINE_LOG,
                   hint="importing vLLM" if getattr(engine, "name", "") == "vllm" else None), \
                ResourceMeter() as start_meter:
            engine_start_s = engine.start()
        if server is not None:
            # cold start of a served engine: server launch to healthy, plus the client's own start
            engine_start_s = time.monotonic() - t_server
            meta["server"] = {"log": str(state.run_dir / "server.log"), "base_url": getattr(engine, "base_url", None), "started_by": "costtax"}
        meta["engine"] = engine.provenance()
        external = server is None and getattr(engine, "name", None) == "openai"
        meta["engine_start"] = {"engine_start_s": engine_start_s, "meter": meter_reading(start_meter, external=external)}
        if not external:
            _say_if_busy(start_meter, emit)
        scorer, eval_scorer = _reward_models(config, meta, scorer, eval_scorer, emit, policy=engine)
        # an injected scorer (tests, library users) brings no judge model of the run's own
        refusal_judge = _refusal_judge(state, emit) if injected_scorer is None else None
        idle = _idle_power()
        if idle is not None:
            meta["idle_power_w"] = idle
        save_meta(state)
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
    return StartedModels(engine, scorer, eval_scorer, owns, restart, server, refusal_judge)


def _refusal_judge(state: RunState, emit: Event):
    """The refusal question asked of the configured judge model, when some prompt's source is
    scored by refusal (AdvBench, DoNotAnswer, HarmBench, harmful). A scalar reward model cannot
    answer a question: the judge column is then empty and run.json says why."""
    if not any(p.effective_scorer == "refusal" for p in state.prompts):
        return None
    from ..rewards.refusal import RefusalJudge

    try:
        judge = RefusalJudge(state.config.reward_model, trust_remote_code=state.config.trust_remote_code)
    except ConfigError as exc:
        state.meta["refusal_judge"] = {"skipped": str(exc)}
        return None
    with phase(emit, "loading the refusal judge"):
        state.meta["refusal_judge"] = {"spec": state.config.reward_model, "load_s": judge.load(), **getattr(judge, "provenance", lambda: {})()}
    return judge


def _say_if_busy(start_meter, emit: Event) -> None:
    """The engine start is metered anyway: if neighbours kept the run's CPUs busy through it, say
    so before the cells run, not only in the table at the end."""
    from ..report.table import CONTENTION_WARN_SHARE

    share = getattr(start_meter.reading, "foreign_cpu_share", None)
    if isinstance(share, (int, float)) and share > CONTENTION_WARN_SHARE:
        emit("status", {"msg": f"machine busy: other processes kept {share:.0%} of this run's CPUs busy during the engine start; "
                               "timings will be inflated (each cell records foreign_cpu_share)"})


def _idle_power(seconds: float = 3.0) -> dict[str, Any] | None:
    """Mean board power over a few seconds with nothing running, for the energy sanity check.
    NVML only: without it (CPU machines) there is nothing to measure and nothing is waited."""
    from ..metering.nvml import NvmlSampler

    probe = NvmlSampler()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with probe:
            time.sleep(0.05)
    if probe.reading is None or not probe.reading.available:
        return None
    from ..metering import ResourceMeter

    with ResourceMeter() as m:
        time.sleep(seconds)
    r = m.result()
    w = getattr(r, "power_mean_w", None) if r is not None else None
    return {"power_w": w, "seconds": seconds} if w is not None else None


def _reward_models(config: RunConfig, meta: dict, scorer, eval_scorer, emit: Event, policy=None):
    """Selection scorer when a cell needs one; evaluation scorer: --eval-reward-model, or the
    selection reward model as a proxy (labelled so), or none with --eval-reward-model none."""
    needs_selection = any(getattr(c.build(), "needs_reward_model", False) for c in config.cells)
    eval_spec = config.eval_reward_model
    if scorer is None and (needs_selection or eval_spec is None):
        from ..rewards import make_reward_model

        with phase(emit, f"loading reward model {config.reward_model}"):
            scorer = make_reward_model(config.reward_model, trust_remote_code=config.trust_remote_code, policy=policy)
            meta["reward_model"] = {"spec": config.reward_model, "load_s": scorer.load(), **scorer.provenance()}
        if config.judge_calibration:
            from ..rewards.calibration_cache import pairs_accuracy, public_calibration

            meta["reward_model"]["pairs_accuracy"] = pairs_accuracy(scorer, emit)
            # agreement with public human labels nobody here wrote (held-out part; cached)
            meta["reward_model"]["public_calibration"] = public_calibration(scorer, emit)
    if eval_scorer is None:
        if eval_spec is None:
            eval_scorer = scorer
            meta["eval_reward"] = {"source": "proxy", "spec": config.reward_model}
        elif eval_spec == "none":
            meta["eval_reward"] = {"source": "none"}
        else:
            from ..rewards import make_reward_model

            with phase(emit, f"loading evaluation reward model {eval_spec}"):
                eval_scorer = make_reward_model(eval_spec, trust_remote_code=config.trust_remote_code, policy=policy)
                meta["eval_reward"] = {"source": "eval", "spec": eval_spec, "load_s": eval_scorer.load(), **eval_scorer.provenance()}
    else:
        meta["eval_reward"] = {"source": "eval" if eval_scorer is not scorer else "proxy", "spec": getattr(eval_scorer, "name", "injected")}
    return scorer, eval_scorer


def probe_engine(engine, sampling) -> None:
    """A liveness probe (after a failed unit): two tiny requests through the sync API."""
    from ..engines.base import GenRequest, SamplingSpec

    engine.generate(
        [
            GenRequest("warmup", ({"role": "user", "content": "Say hello."},), n=2),
            GenRequest("warmup", ({"role": "user", "content": "Name three colours, please."},), n=1),
        ],
        SamplingSpec(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=8, seed=sampling.seed),
    )


def _engine_alive(engine, config: RunConfig) -> bool:
    from ..engines.base import SamplingSpec

    try:
        probe_engine(engine, SamplingSpec(**config.sampling_dict()))
        return True
    except Exception:
        return False


def restart_if_dead(state: RunState, models: StartedModels, emit: Event) -> None:
    """After a failed unit: when this run owns a restartable engine and it no longer answers the
    probe, close it and start a new one (recorded as an engine_restart event)."""
    if models.restart and not _engine_alive(models.engine, state.config):
        emit("status", {"msg": "engine died; restarting it for the next cell"})
        models.close_async()
        models.engine = _restart(models.engine, state.config, state.meta, emit)


def _restart(engine, config: RunConfig, meta: dict, emit: Event):
    try:
        engine.close()
    except Exception:
        pass
    new = _make_engine(config)
    with phase(emit, f"restarting {getattr(new, 'name', config.engine)} engine", log=ENGINE_LOG):
        start_s = new.start()
    meta.setdefault("events", []).append({"t": provenance.now_iso(), "event": "engine_restart", "engine_start_s": start_s})
    return new
