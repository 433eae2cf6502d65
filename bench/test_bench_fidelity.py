"""Cheap checks of bench/fidelity.py and its modules: no vLLM, no model (the CI smoke run `pytest
bench --benchmark-disable` must stay fast). The real measurement is `python bench/fidelity.py`.

- the statistics helpers on synthetic numbers (fidelity_stats), the contention gauges
  (fidelity_machine), the report (fidelity_report);
- the raw and instrumented plain paths (fidelity_overhead) on tests/fakes.py's FakeEngine:
  identical answers and token counts, and the instrumented path under pytest-benchmark
  (`benchmark.pedantic`, fixed rounds): the profiler's fixed cost per cell when the engine costs
  nothing;
- part 2's child command lines (fidelity_throughput) with subprocess.run replaced, and the
  dispatch of the child flags in bench/fidelity.py;
- that none of these modules imports vLLM or torch.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _p in (str(REPO), str(BENCH)):  # costtax from this checkout; the sibling fidelity_* modules
    if _p not in sys.path:
        sys.path.insert(0, _p)

import fidelity  # noqa: E402
import fidelity_throughput  # noqa: E402
from fidelity_machine import cpu_env, foreign_share, machine_busy_s, quiet_pairs  # noqa: E402
from fidelity_overhead import fake_engine, run_instrumented, run_raw  # noqa: E402
from fidelity_report import KEEP_BEGIN, KEEP_END, kept_block, regenerate, render_markdown  # noqa: E402
from fidelity_stats import (  # noqa: E402
    bootstrap_median_ci, bootstrap_overhead_ci, median, overhead_estimates, overhead_pct, overhead_verdict, paired_overhead_pcts,
    ratio_verdict, rotated, spread,
    throughput_ratio,
)
from fidelity_throughput import run_costtax_cli, run_vllm_bench  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:NVML unavailable")
MODULES = ("fidelity_stats", "fidelity_machine", "fidelity_overhead", "fidelity_throughput", "fidelity_report", "fidelity")


def test_median_and_spread():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5
    s = spread([9.0, 10.0, 11.0])
    assert s["n"] == 3 and s["median"] == 10.0 and s["min"] == 9.0 and s["max"] == 11.0
    assert s["rel_range_pct"] == pytest.approx(20.0)
    with pytest.raises(ValueError):
        median([])


def test_overhead_pct_uses_medians():
    raw = [10.0, 10.2, 9.8, 30.0, 10.1]  # one outlier must not move the median
    inst = [10.1, 10.3, 9.9, 10.2, 10.0]
    assert overhead_pct(raw, inst) == pytest.approx(100 * (10.1 - 10.1) / 10.1)
    assert overhead_pct([1.0, 1.0], [1.02, 1.02]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        overhead_pct([0.0], [1.0])


def test_paired_overhead_and_bootstrap_ci():
    raw = [10.0, 12.0, 11.0, 10.5, 13.0]
    inst = [10.1, 12.1, 11.0, 10.6, 13.2]
    paired = paired_overhead_pcts(raw, inst)
    assert paired[0] == pytest.approx(1.0) and paired[2] == pytest.approx(0.0)
    lo, hi = bootstrap_median_ci(paired)
    assert lo <= median(paired) <= hi
    assert bootstrap_median_ci(paired) == (lo, hi)  # seeded
    with pytest.raises(ValueError):
        paired_overhead_pcts([1.0], [1.0, 2.0])


def test_verdicts_and_ratio():
    # the pass rule is on the CI's upper end, never on the point estimate
    v = overhead_verdict(1.2, (0.5, 1.9))
    assert v["pass"] and v["resolved"] and v["ci95_pct"] == [0.5, 1.9]
    v = overhead_verdict(1.2, (-3.0, 6.0))  # point under target, CI across it: fails, unresolved
    assert not v["pass"] and not v["resolved"]
    v = overhead_verdict(-9.0, (-14.0, 2.0))  # upper end AT the target: not shown below it
    assert not v["pass"]
    assert not overhead_verdict(2.5, (2.1, 3.0))["pass"] and overhead_verdict(2.5, (2.1, 3.0))["resolved"]
    assert throughput_ratio([95.0, 100.0, 105.0], [100.0, 110.0, 90.0]) == pytest.approx(1.0)
    assert ratio_verdict(0.91)["pass"] and not ratio_verdict(0.89)["pass"]
    assert ratio_verdict(1.05)["deviation_pct"] == pytest.approx(5.0)


def test_each_estimate_has_its_own_ci():
    """Paired and unpaired estimates differ on drifting rounds; each CI contains its own point
    estimate, and the verdict is the paired one's."""
    raw = [10.0, 12.0, 14.0, 16.0, 18.0]
    inst = [10.5, 12.5, 14.4, 16.9, 18.2]  # +2.3..5.6 % per round; medians 14.0 vs 14.4
    e = overhead_estimates(raw, inst)
    p, u = e["paired"], e["unpaired"]
    assert p["value_pct"] == pytest.approx(median(paired_overhead_pcts(raw, inst)))
    assert u["value_pct"] == pytest.approx(overhead_pct(raw, inst))
    assert p["ci95_pct"][0] <= p["value_pct"] <= p["ci95_pct"][1]
    assert u["ci95_pct"][0] <= u["value_pct"] <= u["ci95_pct"][1]
    assert p["ci95_pct"] != u["ci95_pct"]
    # the paired CI is tight (every round +2.3..+5.6 %), the unpaired one spans the drift
    assert u["ci95_pct"][1] - u["ci95_pct"][0] > 3 * (p["ci95_pct"][1] - p["ci95_pct"][0])
    assert e["verdict"]["value_pct"] == p["value_pct"] and e["verdict"]["ci95_pct"] == p["ci95_pct"]
    assert e["verdict"]["estimate"] == "paired" and not e["verdict"]["pass"]  # +2.9 % > 2 %
    assert bootstrap_overhead_ci(raw, inst) == bootstrap_overhead_ci(raw, inst)  # seeded


@pytest.mark.parametrize(
    "json_name,md_name",
    [("fidelity-2026-11-27-101557.json", "FIDELITY.md"),
     ("fidelity-2026-11-27-overhead-after-interval-fix.json", "FIDELITY-overhead-after-interval-fix.md")],
)
def test_committed_fidelity_pages_are_renderings_of_their_json(json_name, md_name):
    """The committed pages are exactly what bench/fidelity_report.py renders from the committed
    JSON (hand-written block carried over): no figure in them is typed by hand."""
    results = Path(__file__).parent / "results"
    md = results / md_name
    assert regenerate(results / json_name, md, write=False) == md.read_text(encoding="utf-8")


def test_rendered_verdict_follows_the_ci_not_the_stored_one():
    """A result whose stored verdict says pass (old rule: point estimate) renders as not passed
    when the paired CI95 crosses the target."""
    results = Path(__file__).parent / "results"
    res = json.loads((results / "fidelity-2026-11-27-overhead-after-interval-fix.json").read_text())
    assert res["overhead"]["verdict"]["pass"] is True  # as stored by the old rule
    md = render_markdown(res)
    row = next(ln for ln in md.splitlines() if ln.startswith("| profiler overhead: paired"))
    assert row.endswith("| no (not resolved: noise) |") and "CI95 -9.5..+12.6 %" in row
    assert "paired +" not in md.split("## Overhead runs")[0]  # no point estimate next to another's CI


def test_rotated_alternates_order():
    arms = ["raw", "instrumented", "vllm_llm"]
    firsts = [rotated(arms, i)[0] for i in range(3)]
    assert sorted(firsts) == sorted(arms)
    assert all(sorted(rotated(arms, i)) == sorted(arms) for i in range(5))


@pytest.fixture(scope="module")
def fake_setup():
    from costtax.engines.base import SamplingSpec
    from costtax.prompts import load_prompts

    return fake_engine(), load_prompts(["helpful"], limit=16), SamplingSpec(temperature=0.0, max_tokens=32)


def test_raw_and_instrumented_do_the_same_work(fake_setup, tmp_path):
    eng, prompts, sampling = fake_setup
    raw = run_raw(eng, prompts, sampling)
    inst = run_instrumented(eng, prompts, sampling, tmp_path / "run")
    assert raw["output_tokens"] == inst["output_tokens"]
    assert raw["texts"] == inst["texts"]
    assert raw["finish_reasons"] == inst["finish_reasons"]
    assert inst["cell_wall_s"] <= inst["elapsed_s"]
    cells = [json.loads(x) for x in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    assert cells[0]["status"] == "ok" and cells[0]["answers"] == len(prompts)


def test_instrumented_plain_fake_engine(benchmark, fake_setup, tmp_path, bench_env):
    """The profiler's fixed per-cell cost (CellContext + RunWriter + ResourceMeter) on a
    zero-cost engine; extra_info has the raw engine.generate median for comparison."""
    eng, prompts, sampling = fake_setup
    counter = itertools.count()

    def setup():
        return (eng, prompts, sampling, tmp_path / f"r{next(counter)}"), {}

    out = benchmark.pedantic(run_instrumented, setup=setup, rounds=10, warmup_rounds=1)
    assert sum(out["output_tokens"]) > 0
    raw = [run_raw(eng, prompts, sampling)["elapsed_s"] for _ in range(10)]
    benchmark.extra_info.update(bench_env)
    benchmark.extra_info.update(engine="fake", n_prompts=len(prompts), raw_generate_median_s=median(raw))


def test_render_markdown_from_synthetic_result():
    raw, inst, bare = [10.0, 10.4, 9.9], [10.1, 10.3, 10.0], [9.8, 9.9, 10.0]
    paired = paired_overhead_pcts(raw, inst)
    res = {
        "mode": "full", "date": "2025-01-01T00:00:00+00:00", "json_name": "fidelity-2025-01-01.json",
        "machine": {"cpu": "X", "cpu_count": 2, "loadavg_start": [1, 1, 1], "loadavg_end": [1, 1, 1]},
        "versions": {"vllm": "0.32.0", "torch": "2.13", "costtax": "0.1"}, "git_commit": "abc",
        "settings": {"n_prompts": 16, "model": "m", "max_tokens": 32, "runs": 3},
        "overhead": {
            "raw_s": raw, "instrumented_s": inst, "vllm_llm_s": bare,
            "raw": spread(raw), "instrumented": spread(inst), "vllm_llm": spread(bare),
            "verdict": overhead_verdict(overhead_pct(raw, inst), bootstrap_median_ci(paired)),
            "paired_overhead_median_pct": median(paired),
            "output_tokens_raw": [512] * 3, "output_tokens_instrumented": [512] * 3, "tokens_match": True, "texts_match": True,
            "vllm_llm_vs_raw_pct": 1.0, "instrumented_vs_vllm_llm_pct": 1.5,
            "fake_engine": {"instrumented_median_s": 0.004, "raw_median_s": 0.0001, "fixed_cost_s": 0.0039},
            "quiet": {"limit_share": 0.1, "rounds": [0, 2], "overhead_pct": 0.5, "paired_overhead_median_pct": 0.4},
            "foreign_share": {"raw": [0.05, 0.4, 0.0], "instrumented": [0.01, 0.2, 0.03]},
            "overhead_pct": overhead_pct(raw, inst),
        },
        "throughput": {
            "ratio": 0.97, "verdict": ratio_verdict(0.97),
            "costtax": {"runs": [{"tokens_per_s": 50.0, "output_tokens": 512}] * 3, "tokens_per_s": spread([50.0] * 3)},
            "vllm_bench": {"runs": [{"tokens_per_s": 51.5, "output_tokens": 512}] * 3, "tokens_per_s": spread([51.5] * 3)},
        },
        "notes": ["a note"],
    }
    md = render_markdown(res)
    assert "| profiler overhead" in md and "ratio 0.970" in md and "- a note" in md
    assert "quiet rounds only" in md and "2 of 3 rounds" in md
    assert not any(math.isnan(x) for x in res["overhead"]["verdict"]["ci95_pct"])


def test_foreign_share_and_quiet_pairs():
    # 2 CPUs, 10 s window, machine busy 6 CPU-s of which 4 are ours: others used 10 % of it
    assert foreign_share(6.0, 4.0, 10.0, 2) == pytest.approx(0.10)
    assert foreign_share(3.0, 4.0, 10.0, 2) == 0.0  # clock skew never goes negative
    assert foreign_share(None, 4.0, 10.0, 2) is None
    q = quiet_pairs([1, 1, 1], [1, 1, 1], [0.05, 0.5, 0.02], [0.01, 0.0, None], 0.10)
    assert q == [0]
    busy = machine_busy_s()
    assert busy is None or busy >= 0


def test_kept_block_survives_regeneration():
    text = f"# old table\n\n{KEEP_BEGIN}\n## Findings\nhand-written\n{KEEP_END}\ntrailing"
    kept = kept_block(text)
    assert kept.startswith(KEEP_BEGIN) and kept.endswith(KEEP_END) and "hand-written" in kept
    assert kept_block("# no markers") == ""


def test_modules_import_without_vllm_or_torch(tmp_path):
    """The split's promise: the bench's modules and its command line import neither vLLM nor torch
    (only the functions that start or drive an engine do). Imported one by one in a fresh
    interpreter, so the first module that pulls one in is the one named."""
    code = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(BENCH)!r}, {str(REPO)!r}]\n"
        f"for m in {MODULES!r}:\n"
        "    __import__(m)\n"
        "    heavy = sorted(h for h in ('torch', 'vllm', 'transformers') if h in sys.modules)\n"
        "    if heavy:\n"
        "        break\n"
        "print(json.dumps({'module': m, 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"module": MODULES[-1], "heavy": []}


def test_child_commands_run_the_dispatcher(tmp_path, monkeypatch):
    """Part 2's command lines, built but not run (subprocess.run replaced): the plain costtax arm is
    `python -m costtax profile ...`; the two children that need this bench's code run
    bench/fidelity.py with its child flag, and its main hands the rest of the line on."""
    calls = []

    def fake_run(cmd, *, stdout, stderr, env, cwd, timeout):
        calls.append({"cmd": cmd, "env": env, "cwd": cwd, "timeout": timeout})
        if "--_vllm-bench-child" in cmd:  # what vLLM's benchmark leaves behind
            Path(cmd[cmd.index("--output-json") + 1]).write_text(json.dumps({"elapsed_time": 2.0, "num_requests": 4}))
            stdout.write("Total num prompt tokens:  100\nTotal num output tokens:  32\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(fidelity_throughput.subprocess, "run", fake_run)
    prompts_file, dispatcher = tmp_path / "prompts.jsonl", str(BENCH / "fidelity.py")

    res = run_costtax_cli(prompts_file, 4, 8, tmp_path / "ct0", 30.0)
    cmd = calls[-1]["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "costtax", "profile"]
    profile_args = cmd[3:]
    assert profile_args[profile_args.index("--out") + 1] == str(tmp_path / "ct0")
    assert profile_args[profile_args.index("-p") + 1] == str(prompts_file)
    assert [profile_args[profile_args.index(f) + 1] for f in ("--limit", "--max-tokens", "--temperature")] == ["4", "8", "0"]
    assert calls[-1]["cwd"] == str(tmp_path) and calls[-1]["timeout"] == 30.0
    assert "VLLM_CPU_OMP_THREADS_BIND" in calls[-1]["env"]
    assert res["rc"] == 0 and "error" in res  # the fake left no run folder
    assert {"child_cpu_s", "foreign_share_life"} <= res.keys()

    run_costtax_cli(prompts_file, 4, 8, tmp_path / "ctm0", 30.0, meter_interval_s=1.0)
    cmd = calls[-1]["cmd"]
    assert cmd[:5] == [sys.executable, dispatcher, "--_costtax-child", "1.0", "--"] and Path(cmd[1]).is_file()
    assert cmd[5:] == [str(tmp_path / "ctm0") if a == str(tmp_path / "ct0") else a for a in profile_args]

    seen = {}
    monkeypatch.setattr(fidelity, "costtax_child", lambda interval_s, argv: seen.update(costtax=(interval_s, argv)))
    assert fidelity.main(cmd[2:]) == 0
    assert seen["costtax"] == (1.0, cmd[5:])

    res = run_vllm_bench(tmp_path / "sharegpt.json", 4, 8, "/models/m", tmp_path / "vb0.json", 30.0)
    cmd = calls[-1]["cmd"]
    assert cmd[:4] == [sys.executable, dispatcher, "--_vllm-bench-child", "--"]
    assert [cmd[cmd.index(f) + 1] for f in ("--model", "--dataset-path", "--num-prompts", "--output-len")] == [
        "/models/m", str(tmp_path / "sharegpt.json"), "4", "8"]
    assert calls[-1]["cwd"] == str(tmp_path)
    assert "error" not in res, res
    assert (res["output_tokens"], res["prompt_tokens"], res["num_requests"], res["tokens_per_s"]) == (32, 100, 4, 16.0)
    assert {"child_cpu_s", "foreign_share_life"} <= res.keys()

    monkeypatch.setattr(fidelity, "vllm_bench_child", lambda argv: seen.update(vllm=argv))
    assert fidelity.main(cmd[2:]) == 0
    assert seen["vllm"] == cmd[4:]


def test_costtax_child_sets_the_meter_default(tmp_path, monkeypatch):
    """--_costtax-child: both of ResourceMeter's default sampling intervals are set before the CLI
    runs, its other defaults kept; and the child line really runs from another folder."""
    import costtax.cli
    from costtax.metering.meter import ResourceMeter

    monkeypatch.setattr(ResourceMeter.__init__, "__defaults__", ResourceMeter.__init__.__defaults__)  # restored after
    seen = {}

    def fake_cli(argv):
        m = ResourceMeter()
        seen.update(argv=argv, interval_s=m.interval_s, process_interval_s=m.process_interval_s, devices=m.devices)

    monkeypatch.setattr(costtax.cli, "main", fake_cli)
    fidelity_throughput.costtax_child(1.0, ["profile", "-t", "plain"])
    assert seen == {"argv": ["profile", "-t", "plain"], "interval_s": 1.0, "process_interval_s": 1.0, "devices": None}

    out = subprocess.run([sys.executable, str(BENCH / "fidelity.py"), "--_costtax-child", "1.0", "--", "--help"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120, env=dict(os.environ, COLUMNS="100"))
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout and "profile" in out.stdout


def test_children_run_this_checkout(monkeypatch):
    """The child processes get this checkout first on PYTHONPATH (once), the caller's entries after
    it: `python -m costtax` must not pick up another checkout's editable install."""
    repo = str(Path(fidelity.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", repo]))
    assert cpu_env()["PYTHONPATH"].split(os.pathsep) == [repo, "/elsewhere"]
    monkeypatch.delenv("PYTHONPATH")
    assert cpu_env()["PYTHONPATH"] == repo
