"""Cheap checks of bench/fidelity.py: no vLLM, no model (the CI smoke run `pytest bench
--benchmark-disable` must stay fast). The real measurement is `python bench/fidelity.py`.

- the statistics helpers on synthetic numbers;
- the raw and instrumented plain paths on tests/fakes.py's FakeEngine: identical answers and
  token counts, and the instrumented path under pytest-benchmark (`benchmark.pedantic`, fixed
  rounds): the profiler's fixed cost per cell when the engine costs nothing.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).with_name("fidelity.py")
_spec = importlib.util.spec_from_file_location("costtax_bench_fidelity", _PATH)
fid = importlib.util.module_from_spec(_spec)
pytestmark = pytest.mark.filterwarnings("ignore:NVML unavailable")
_spec.loader.exec_module(fid)


def test_median_and_spread():
    assert fid.median([3.0, 1.0, 2.0]) == 2.0
    assert fid.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    s = fid.spread([9.0, 10.0, 11.0])
    assert s["n"] == 3 and s["median"] == 10.0 and s["min"] == 9.0 and s["max"] == 11.0
    assert s["rel_range_pct"] == pytest.approx(20.0)
    with pytest.raises(ValueError):
        fid.median([])


def test_overhead_pct_uses_medians():
    raw = [10.0, 10.2, 9.8, 30.0, 10.1]  # one outlier must not move the median
    inst = [10.1, 10.3, 9.9, 10.2, 10.0]
    assert fid.overhead_pct(raw, inst) == pytest.approx(100 * (10.1 - 10.1) / 10.1)
    assert fid.overhead_pct([1.0, 1.0], [1.02, 1.02]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        fid.overhead_pct([0.0], [1.0])


def test_paired_overhead_and_bootstrap_ci():
    raw = [10.0, 12.0, 11.0, 10.5, 13.0]
    inst = [10.1, 12.1, 11.0, 10.6, 13.2]
    paired = fid.paired_overhead_pcts(raw, inst)
    assert paired[0] == pytest.approx(1.0) and paired[2] == pytest.approx(0.0)
    lo, hi = fid.bootstrap_median_ci(paired)
    assert lo <= fid.median(paired) <= hi
    assert fid.bootstrap_median_ci(paired) == (lo, hi)  # seeded
    with pytest.raises(ValueError):
        fid.paired_overhead_pcts([1.0], [1.0, 2.0])


def test_verdicts_and_ratio():
    v = fid.overhead_verdict(1.2, (0.5, 1.9))
    assert v["pass"] and v["resolved"]
    v = fid.overhead_verdict(1.2, (-3.0, 6.0))
    assert v["pass"] and not v["resolved"]
    assert not fid.overhead_verdict(2.5)["pass"]
    assert fid.throughput_ratio([95.0, 100.0, 105.0], [100.0, 110.0, 90.0]) == pytest.approx(1.0)
    assert fid.ratio_verdict(0.91)["pass"] and not fid.ratio_verdict(0.89)["pass"]
    assert fid.ratio_verdict(1.05)["deviation_pct"] == pytest.approx(5.0)


def test_rotated_alternates_order():
    arms = ["raw", "instrumented", "vllm_llm"]
    firsts = [fid.rotated(arms, i)[0] for i in range(3)]
    assert sorted(firsts) == sorted(arms)
    assert all(sorted(fid.rotated(arms, i)) == sorted(arms) for i in range(5))


@pytest.fixture(scope="module")
def fake_setup():
    from costtax.engines.base import SamplingSpec
    from costtax.prompts import load_prompts

    return fid.fake_engine(), load_prompts(["helpful"], limit=16), SamplingSpec(temperature=0.0, max_tokens=32)


def test_raw_and_instrumented_do_the_same_work(fake_setup, tmp_path):
    eng, prompts, sampling = fake_setup
    raw = fid.run_raw(eng, prompts, sampling)
    inst = fid.run_instrumented(eng, prompts, sampling, tmp_path / "run")
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

    out = benchmark.pedantic(fid.run_instrumented, setup=setup, rounds=10, warmup_rounds=1)
    assert sum(out["output_tokens"]) > 0
    raw = [fid.run_raw(eng, prompts, sampling)["elapsed_s"] for _ in range(10)]
    benchmark.extra_info.update(bench_env)
    benchmark.extra_info.update(engine="fake", n_prompts=len(prompts), raw_generate_median_s=fid.median(raw))


def test_render_markdown_from_synthetic_result():
    raw, inst, bare = [10.0, 10.4, 9.9], [10.1, 10.3, 10.0], [9.8, 9.9, 10.0]
    paired = fid.paired_overhead_pcts(raw, inst)
    res = {
        "mode": "full", "date": "2025-01-01T00:00:00+00:00", "json_name": "fidelity-2025-01-01.json",
        "machine": {"cpu": "X", "cpu_count": 2, "loadavg_start": [1, 1, 1], "loadavg_end": [1, 1, 1]},
        "versions": {"vllm": "0.32.0", "torch": "2.13", "costtax": "0.1"}, "git_commit": "abc",
        "settings": {"n_prompts": 16, "model": "m", "max_tokens": 32, "runs": 3},
        "overhead": {
            "raw_s": raw, "instrumented_s": inst, "vllm_llm_s": bare,
            "raw": fid.spread(raw), "instrumented": fid.spread(inst), "vllm_llm": fid.spread(bare),
            "verdict": fid.overhead_verdict(fid.overhead_pct(raw, inst), fid.bootstrap_median_ci(paired)),
            "paired_overhead_median_pct": fid.median(paired),
            "output_tokens_raw": [512] * 3, "output_tokens_instrumented": [512] * 3, "tokens_match": True, "texts_match": True,
            "vllm_llm_vs_raw_pct": 1.0, "instrumented_vs_vllm_llm_pct": 1.5,
            "fake_engine": {"instrumented_median_s": 0.004, "raw_median_s": 0.0001, "fixed_cost_s": 0.0039},
            "quiet": {"limit_share": 0.1, "rounds": [0, 2], "overhead_pct": 0.5, "paired_overhead_median_pct": 0.4},
            "foreign_share": {"raw": [0.05, 0.4, 0.0], "instrumented": [0.01, 0.2, 0.03]},
            "overhead_pct": fid.overhead_pct(raw, inst),
        },
        "throughput": {
            "ratio": 0.97, "verdict": fid.ratio_verdict(0.97),
            "costtax": {"runs": [{"tokens_per_s": 50.0, "output_tokens": 512}] * 3, "tokens_per_s": fid.spread([50.0] * 3)},
            "vllm_bench": {"runs": [{"tokens_per_s": 51.5, "output_tokens": 512}] * 3, "tokens_per_s": fid.spread([51.5] * 3)},
        },
        "notes": ["a note"],
    }
    md = fid.render_markdown(res)
    assert "| profiler overhead" in md and "ratio 0.970" in md and "- a note" in md
    assert "quiet rounds only" in md and "2 of 3 rounds" in md
    assert not any(math.isnan(x) for x in res["overhead"]["verdict"]["ci95_pct"])


def test_foreign_share_and_quiet_pairs():
    # 2 CPUs, 10 s window, machine busy 6 CPU-s of which 4 are ours: others used 10 % of it
    assert fid.foreign_share(6.0, 4.0, 10.0, 2) == pytest.approx(0.10)
    assert fid.foreign_share(3.0, 4.0, 10.0, 2) == 0.0  # clock skew never goes negative
    assert fid.foreign_share(None, 4.0, 10.0, 2) is None
    q = fid.quiet_pairs([1, 1, 1], [1, 1, 1], [0.05, 0.5, 0.02], [0.01, 0.0, None], 0.10)
    assert q == [0]
    busy = fid._machine_busy_s()
    assert busy is None or busy >= 0


def test_kept_block_survives_regeneration():
    text = f"# old table\n\n{fid.KEEP_BEGIN}\n## Findings\nhand-written\n{fid.KEEP_END}\ntrailing"
    kept = fid.kept_block(text)
    assert kept.startswith(fid.KEEP_BEGIN) and kept.endswith(fid.KEEP_END) and "hand-written" in kept
    assert fid.kept_block("# no markers") == ""
