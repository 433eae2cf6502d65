"""Part 1 of bench/fidelity.py, the profiler's overhead, in one VllmEngine session.

The arms on any costtax Engine: ``run_raw`` (``engine.generate`` on the requests Plain would
build), ``run_instrumented`` (costtax's cell runner ``costtax.run.unit.run_unit`` with its
ResourceMeter, or without it / with another interval for the --diagnose arms) and, on vLLM only,
``run_bare_llm`` (VllmEngine.bare_generate: vLLM with none of costtax's bookkeeping).
``instrumentation_fixed_cost`` runs raw vs instrumented on tests/fakes.py's zero-cost engine;
``sampler_costs`` times one tick of the background process-tree sampler in the live session;
``select_prompts`` picks prompts whose greedy answer runs to max_tokens; ``part_overhead`` is the
whole part: engine start, selection, warm-up, the rotating rounds and the result dict.

Importable without vLLM or torch (bench/test_bench_fidelity.py runs the raw and instrumented arms
on the fake engine); those imports live in the functions that start or drive a real engine.
"""
from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from fidelity_machine import cpu_count, foreign_share, loadavg, machine_busy_s, quiet_pairs, tree_cpu_s, wait_for_quiet
from fidelity_stats import (
    MODEL, QUIET_LIMIT, fmt, median, overhead_estimates, overhead_pct, paired_overhead_pcts, rotated,
    spread, tokens_per_s,
)

REPO = Path(__file__).resolve().parent.parent


def plain_requests(prompts, *, tag: str = "raw"):
    """The GenRequests Plain builds through CellContext (same messages, n=1, shared prefix)."""
    from costtax.engines.base import GenRequest

    return [GenRequest(request_id=f"{tag}|{p.id}|0#{i}", messages=tuple(p.messages()), n=1) for i, p in enumerate(prompts)]


def run_raw(engine, prompts, sampling) -> dict[str, Any]:
    """Uninstrumented: engine.generate on the batch, timed with perf_counter (request building
    included, as Plain builds its requests inside the instrumented window too)."""
    t0 = time.perf_counter()
    results = engine.generate(plain_requests(prompts), sampling)
    elapsed = time.perf_counter() - t0
    samples = [r.samples[0] for r in results]
    return {
        "elapsed_s": elapsed,
        "output_tokens": [s.output_tokens for s in samples],
        "finish_reasons": [s.finish_reason for s in samples],
        "texts": [s.text for s in samples],
    }


def run_instrumented(engine, prompts, sampling, run_dir: Path, *, meter: bool | float = True) -> dict[str, Any]:
    """Instrumented: costtax's own cell runner (costtax.run.unit.run_unit, the step profile()
    runs for every cell) on one plain cell at the offline batch level, no warm-up, timed with
    perf_counter. The prefix-cache reset the runner does first is inside the timer (conservative).

    meter=True: ``ResourceMeter()`` as profile() uses it (NVML every 50 ms, process tree every
    250 ms); a float x: both samplers every x seconds; False: no meter at all (diagnostic arms
    that attribute the overhead)."""
    from costtax.config import RunConfig
    from costtax.load.levels import LoadLevel
    from costtax.metering import ResourceMeter
    from costtax.run.rundir import RunState, new_session_id
    from costtax.run.startup import StartedModels
    from costtax.run.unit import run_unit
    from costtax.store.records import ANSWERS, CALLS, RunWriter
    from costtax.jsonio import read_jsonl

    run_dir = Path(run_dir)
    cfg = RunConfig(
        techniques=("plain",), max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
        seed=sampling.seed, ignore_eos=getattr(sampling, "ignore_eos", False), warmup_answers=0, judge_calibration=False,
        eval_reward_model="none",
    )
    if meter is True:
        factory = None
    elif meter is False:
        factory = lambda: None  # noqa: E731
    else:
        factory = lambda: ResourceMeter(interval_s=float(meter), process_interval_s=float(meter))  # noqa: E731
    t0 = time.perf_counter()
    state = RunState(cfg, run_dir, "fidelity", {"engine_start": {}}, new_session_id(), time.monotonic(), RunWriter(run_dir), tuple(prompts))
    models = StartedModels(engine, owns_engine=False, restart=False)
    rec = run_unit(state, models, cfg.cells[0], LoadLevel("batch"), 0, warmup=False, meter_factory=factory)
    models.close_async()
    state.writer.close()
    elapsed = time.perf_counter() - t0
    if rec.status != "ok":
        raise RuntimeError(f"instrumented cell failed: {rec.error}")
    calls = [r for r in read_jsonl(run_dir / CALLS) if r.get("stage") == "sample"]
    answers = {r["prompt_id"]: r for r in read_jsonl(run_dir / ANSWERS)}
    by_prompt = {r["prompt_id"]: r for r in calls}
    return {
        "elapsed_s": elapsed,
        "cell_wall_s": rec.cell_wall_s,
        "output_tokens": [int(by_prompt[p.id]["output_tokens"]) for p in prompts],
        "finish_reasons": [(by_prompt[p.id].get("finish_reasons") or [None])[0] for p in prompts],
        "texts": [answers[p.id]["text"] for p in prompts],
        "meter_samples_cpu_s": (rec.meter or {}).get("cpu_s"),
    }


def fake_engine():
    """tests/fakes.py's deterministic torch-free engine, started."""
    tests_dir = str(REPO / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from fakes import FakeEngine  # noqa: E402

    eng = FakeEngine(words_per_sample=32)
    eng.start()
    return eng


def instrumentation_fixed_cost(prompts, sampling, *, reps: int = 20) -> dict[str, Any]:
    """Raw vs instrumented on the fake engine (whose generate costs ~nothing): the profiler's
    fixed cost per cell in seconds, free of the model's noise."""
    eng = fake_engine()
    raw, inst = [], []
    with tempfile.TemporaryDirectory(prefix="costtax-fid-fake-") as tmp:
        for i in range(reps):
            raw.append(run_raw(eng, prompts, sampling)["elapsed_s"])
            inst.append(run_instrumented(eng, prompts, sampling, Path(tmp) / f"r{i}")["elapsed_s"])
    return {
        "reps": reps,
        "n_prompts": len(prompts),
        "raw_s": raw,
        "instrumented_s": inst,
        "raw_median_s": median(raw),
        "instrumented_median_s": median(inst),
        "fixed_cost_s": median(inst) - median(raw),
    }


def sampler_costs(engine, reps: int = 40) -> dict[str, Any]:
    """Per-call cost, in the live engine session, of what reads the machine and the engine while a
    measured cell runs: ResourceMeter's process-tree walk (psutil; its sampler thread does one every
    250 ms, costtax.metering.meter.DEFAULT_PROCESS_INTERVAL_S) and VllmEngine's gauge read
    (``engine._gauges()``: the scheduler stats its stat logger last received; the engine no longer
    polls ``get_metrics()`` on a thread). Private methods, called in the foreground: wall and CPU
    (thread) milliseconds per call."""
    out: dict[str, Any] = {}

    def timeit(fn):
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(reps):
            fn()
        return {"wall_ms": (time.perf_counter() - w0) / reps * 1e3, "cpu_ms": (time.thread_time() - c0) / reps * 1e3}

    try:
        from costtax.metering.process import ProcessTreeSampler

        s = ProcessTreeSampler(interval_s=1.0)
        with s:
            out["process_tree_sample"] = timeit(s._sample)
            out["process_tree_n_processes"] = s._nmax
    except Exception as exc:  # noqa: BLE001
        out["process_tree_sample"] = f"{type(exc).__name__}: {exc}"
    try:
        out["vllm_gauge_poll"] = timeit(engine._gauges)
    except Exception as exc:  # noqa: BLE001
        out["vllm_gauge_poll"] = f"{type(exc).__name__}: {exc}"
    try:
        import psutil

        out["system_processes"] = len(psutil.pids())
    except Exception:  # noqa: BLE001
        pass
    return out


def select_prompts(engine, sampling, n: int, log: Callable[[str], None]) -> tuple[list, dict[str, Any]]:
    """First n prompts (helpful, then harmful) whose greedy answer runs to max_tokens, so every arm
    produces exactly n * max_tokens tokens (costtax's SamplingSpec has no ignore_eos)."""
    from costtax.prompts import load_prompts

    pool = load_prompts(["helpful", "harmful"], limit=None)
    chosen, rejected = [], []
    for k in range(0, len(pool), 24):
        chunk = pool[k : k + 24]
        out = run_raw(engine, chunk, sampling)
        for p, fr, nt in zip(chunk, out["finish_reasons"], out["output_tokens"]):
            (chosen if fr == "length" and nt == sampling.max_tokens else rejected).append(p)
        if len(chosen) >= n:
            break
    short = len(chosen) < n
    if short:  # fill with the others; the token counts recorded per run then say so
        chosen += rejected[: n - len(chosen)]
    chosen = chosen[:n]
    log(f"selected {len(chosen)} prompts whose greedy output hits max_tokens ({len(rejected)} stopped early)")
    return chosen, {"pool": len(pool), "stopped_early_seen": len(rejected), "filled_with_short": short}


def run_bare_llm(engine, prompts, sampling) -> dict[str, Any]:
    """vLLM's own AsyncLLM.generate on the token ids VllmEngine would send, with none of
    costtax's bookkeeping (VllmEngine.bare_generate; tokenisation in the timer)."""
    from vllm import SamplingParams

    llm = engine._llm  # the engine's vllm.LLM (private: this bench looks under the wrapper on purpose)
    if llm is None:
        raise RuntimeError("engine not started")
    tok = llm.get_tokenizer()
    t0 = time.perf_counter()
    ids = [list(tok.encode(engine.render(p.messages()), add_special_tokens=False)) for p in prompts]
    sp = SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens)
    outs = engine.bare_generate(ids, sp)
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "output_tokens": [len(o.outputs[0].token_ids) for o in outs]}


def part_overhead(args, cfg, log) -> tuple[dict[str, Any], list, Any]:
    from costtax.engines.base import SamplingSpec
    from costtax.engines.vllm import VllmEngine
    from costtax.model_files import resolve_model

    warnings.filterwarnings("once", message="NVML unavailable")
    sampling = SamplingSpec(temperature=0.0, top_p=1.0, max_tokens=cfg["max_tokens"], seed=0)
    model_dir = resolve_model(MODEL)
    engine = VllmEngine(str(model_dir), seed=0)
    log("starting VllmEngine (once for part 1)")
    start_s = engine.start()
    log(f"engine started in {start_s:.1f} s")
    try:
        prompts, sel = select_prompts(engine, sampling, cfg["n_prompts"], log)
        rendered = [engine.render(p.messages()) for p in prompts]
        prompt_tokens = [engine.count_tokens(r) for r in rendered]
        # warm every arm once (untimed)
        with tempfile.TemporaryDirectory(prefix="costtax-fid-") as tmp:
            engine.reset_prefix_cache()
            run_instrumented(engine, prompts, sampling, Path(tmp) / "warm")
            engine.reset_prefix_cache()
            run_bare_llm(engine, prompts, sampling)
            arms = ["raw", "instrumented"] + (["vllm_llm"] if not args.no_bare else [])
            if args.diagnose:
                arms += ["instrumented_no_meter", "instrumented_meter_1s"]
            times: dict[str, list[float]] = {a: [] for a in arms}
            cpu: dict[str, list[float | None]] = {a: [] for a in arms}
            foreign: dict[str, list[float | None]] = {a: [] for a in arms}
            ncpu = cpu_count()
            toks: dict[str, list[int]] = {a: [] for a in arms}
            texts_match, per_prompt_match = True, True
            cell_wall, order, loads = [], [], []
            settles = []
            for i in range(cfg["runs"]):
                ref_texts = {}
                if args.settle > 0:
                    settles.append(wait_for_quiet(args.settle))
                for arm in rotated(arms, i):
                    engine.reset_prefix_cache()
                    cpu0, busy0 = tree_cpu_s(), machine_busy_s()
                    if arm == "raw":
                        out = run_raw(engine, prompts, sampling)
                    elif arm == "instrumented":
                        out = run_instrumented(engine, prompts, sampling, Path(tmp) / f"run{i}")
                        cell_wall.append(out["cell_wall_s"])
                    elif arm == "instrumented_no_meter":
                        out = run_instrumented(engine, prompts, sampling, Path(tmp) / f"nometer{i}", meter=False)
                    elif arm == "instrumented_meter_1s":
                        out = run_instrumented(engine, prompts, sampling, Path(tmp) / f"meter1s{i}", meter=1.0)
                    else:
                        out = run_bare_llm(engine, prompts, sampling)
                    cpu1, busy1 = tree_cpu_s(), machine_busy_s()
                    cpu[arm].append(None if cpu0 is None or cpu1 is None else cpu1 - cpu0)
                    foreign[arm].append(
                        foreign_share(None if busy0 is None or busy1 is None else busy1 - busy0, cpu[arm][-1], out["elapsed_s"], ncpu)
                    )
                    times[arm].append(out["elapsed_s"])
                    toks[arm].append(sum(out["output_tokens"]))
                    if arm in ("raw", "instrumented"):
                        ref_texts[arm] = (out["texts"], out["output_tokens"])
                    order.append(arm)
                    log(f"round {i + 1}/{cfg['runs']} {arm:>12}: {out['elapsed_s']:.3f} s, {sum(out['output_tokens'])} tokens, "
                        f"cpu {fmt(cpu[arm][-1], 2)} s, other tenants {fmt(None if foreign[arm][-1] is None else 100 * foreign[arm][-1], 0)} % of the machine")
                loads.append(loadavg())
                texts_match &= ref_texts["raw"][0] == ref_texts["instrumented"][0]
                per_prompt_match &= ref_texts["raw"][1] == ref_texts["instrumented"][1]
        fixed = instrumentation_fixed_cost(prompts, sampling, reps=20 if not args.quick else 5)
        samplers = sampler_costs(engine)
        engine_prov = engine.provenance()
    finally:
        engine.close()
    raw, inst = times["raw"], times["instrumented"]
    paired = paired_overhead_pcts(raw, inst)
    est = overhead_estimates(raw, inst)
    pct = overhead_pct(raw, inst)
    res: dict[str, Any] = {
        "engine_start_s": start_s,
        "engine": engine_prov,
        "selection": sel,
        "prompt_ids": [p.id for p in prompts],
        "prompt_tokens": prompt_tokens,
        "order": order,
        "loadavg_per_round": loads,
        "raw_s": raw,
        "instrumented_s": inst,
        "instrumented_cell_wall_s": cell_wall,
        "raw": spread(raw),
        "instrumented": spread(inst),
        "overhead_pct": pct,
        "paired_overhead_pct": paired,
        "paired_overhead_median_pct": median(paired),
        "estimates": {"paired": est["paired"], "unpaired": est["unpaired"]},
        "verdict": est["verdict"],
        "output_tokens_raw": toks["raw"],
        "output_tokens_instrumented": toks["instrumented"],
        "expected_output_tokens": len(prompts) * cfg["max_tokens"],
        "tokens_match": toks["raw"] == toks["instrumented"] and per_prompt_match,
        "texts_match": texts_match,
        "tokens_per_s": {
            "raw": spread([tokens_per_s([t], s) for t, s in zip(toks["raw"], raw)]),
            "instrumented": spread([tokens_per_s([t], s) for t, s in zip(toks["instrumented"], inst)]),
        },
        "fake_engine": fixed,
        "sampler_costs": samplers,
    }
    for arm in ("instrumented_no_meter", "instrumented_meter_1s"):
        if arm in times:
            res[f"{arm}_s"] = times[arm]
            res[arm] = spread(times[arm])
            res[f"{arm}_vs_raw_pct"] = overhead_pct(raw, times[arm])
            res[f"{arm}_paired_vs_raw_median_pct"] = median(paired_overhead_pcts(raw, times[arm]))
    res["foreign_share"] = foreign
    res["settle"] = settles
    q = quiet_pairs(raw, inst, foreign["raw"], foreign["instrumented"], QUIET_LIMIT)
    res["quiet"] = {"limit_share": QUIET_LIMIT, "rounds": q}
    if q:
        qr, qi = [raw[i] for i in q], [inst[i] for i in q]
        res["quiet"].update(
            raw_s=qr, instrumented_s=qi, overhead_pct=overhead_pct(qr, qi),
            paired_overhead_median_pct=median(paired_overhead_pcts(qr, qi)),
            estimates=overhead_estimates(qr, qi),
        )
    if all(x is not None for a in arms for x in cpu[a]):
        res["cpu_s"] = {a: cpu[a] for a in arms}
        res["cpu_overhead_pct"] = overhead_pct(cpu["raw"], cpu["instrumented"])
        res["cpu_paired_overhead_median_pct"] = median(paired_overhead_pcts(cpu["raw"], cpu["instrumented"]))
        res["cpu"] = {a: spread(cpu[a]) for a in arms}
    if "vllm_llm" in times:
        res["vllm_llm_s"] = times["vllm_llm"]
        res["vllm_llm"] = spread(times["vllm_llm"])
        res["output_tokens_vllm_llm"] = toks["vllm_llm"]
        res["vllm_llm_vs_raw_pct"] = overhead_pct(times["vllm_llm"], raw)
        res["instrumented_vs_vllm_llm_pct"] = overhead_pct(times["vllm_llm"], inst)
    return res, prompts, rendered
