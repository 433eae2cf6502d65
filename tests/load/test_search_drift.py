"""Capacity intervals that include drift (costtax/load/search.py): the bracketing levels re-probed under
their own probe keys, an isotonic fit of p95 against concurrency bootstrapped over units and waves,
and an over-saturation stop that counts as a failure only when the p95 evidence says so."""
from __future__ import annotations

import numpy as np
import pytest

from costtax.load.search import SearchSpec, Verdict, _capacity, capacity, judge, reprobes_wanted, verdicts
from costtax.load.search_interval import _pava, isotonic_interval, level_units

pytestmark = pytest.mark.unit

SPEC = SearchSpec("concurrency", 15.0, 1.0, 8.0, reprobes=2)


def _unit(rng, p95_target, c, n=None):
    """Latencies of one probe at concurrency c whose p95 is about `p95_target`."""
    n = n or 4 * c
    lat = list(rng.uniform(0.5, 0.8, n) * p95_target)
    lat[-1] = lat[-2] = p95_target * 1.02
    return {"latencies": lat, "infinite": False}


def test_pava_pools_a_non_monotone_p95():
    assert _pava([1.0, 12.2, 9.95, 15.8], [1, 1, 1, 1]) == pytest.approx([1.0, 11.075, 11.075, 15.8])
    assert _pava([1.0, 2.0, 3.0], [1, 2, 1]) == [1.0, 2.0, 3.0]


def test_interval_spans_a_level_the_repeats_disagree_on_and_is_zero_width_only_when_they_agree():
    rng = np.random.default_rng(0)
    # the bon:n=4 search: c=6 ran at 15.8 s in one run and 13.0 s in another (SLO 15 s)
    units = {4.0: [_unit(rng, 12.2, 4), _unit(rng, 10.2, 4)], 5.0: [_unit(rng, 9.95, 5), _unit(rng, 8.78, 5)],
             6.0: [_unit(rng, 15.8, 6), _unit(rng, 13.0, 6), _unit(rng, 14.0, 6)], 8.0: [_unit(rng, 30.0, 8)]}
    lo, hi = isotonic_interval(SPEC, units)
    assert lo <= 5 and hi >= 6 and hi > lo
    # the same with no spread inside a probe: the width comes from resampling the repeats alone
    const = lambda p95, c: {"latencies": [p95] * (4 * c), "infinite": False}  # noqa: E731
    units = {4.0: [const(12.2, 4), const(10.2, 4)], 5.0: [const(9.95, 5), const(8.78, 5)],
             6.0: [const(15.8, 6), const(13.0, 6), const(14.0, 6)], 8.0: [const(30.0, 8)]}
    assert isotonic_interval(SPEC, units) == (5.0, 7.0)
    # every unit far on its side of the SLO: the interval has no width
    clear = {4.0: [_unit(rng, 5.0, 4)] * 3, 5.0: [_unit(rng, 6.0, 5)] * 3, 6.0: [_unit(rng, 40.0, 6)] * 3}
    assert isotonic_interval(SPEC, clear) == (5.0, 5.0)
    # a failed unit counts as p95 = infinity
    failed = {4.0: [_unit(rng, 5.0, 4)] * 2, 5.0: [{"latencies": [], "infinite": True}] * 2}
    assert isotonic_interval(SPEC, failed) == (4.0, 4.0)


def _v(value, held, certain, reason="p95", aps=1.0):
    return Verdict(value, 16, 16, 1.0, 0.5, 1.5, held, certain, reason, aps)


def test_oversaturation_stop_is_a_failure_only_when_the_p95_says_so():
    lat_ok = {0: [1.0] * 15 + [1.2]}
    rate = SearchSpec("rate", 15.0, 0.25, 8.0, reprobes=2)
    v = judge(rate, 6.0, lat_ok, planned=24, stop_reason="oversaturated: answer latency rose ...")
    assert not v.held and not v.certain and "does not rule out" in v.reason
    v = judge(rate, 6.0, {0: [20.0] * 16}, planned=24, stop_reason="oversaturated: answer latency rose ...")
    assert not v.held and v.certain
    # closed loop: no queue to grow, the trend is drift: the p95 decides, never certain
    v = judge(SPEC, 6.0, lat_ok, planned=24, stop_reason="oversaturated: answer latency rose ...")
    assert v.held and not v.certain and "uncertain" in v.reason
    v = judge(SPEC, 6.0, {0: [20.0] * 16}, planned=24, stop_reason="oversaturated: answer latency rose ...")
    assert not v.held and not v.certain
    v = judge(SPEC, 6.0, {0: [20.0] * 16}, planned=24, stop_reason="slo_out_of_reach: 2 of 24 ...")
    assert v.certain
    # an uncertain over-saturated level goes into the interval
    rng = np.random.default_rng(1)
    seq = [(_v(1.0, True, True), "start"), (_v(2.0, True, True), "double"), (_v(4.0, True, True), "double"),
           (_v(8.0, False, True), "double"), (_v(6.0, False, False, "stopped early (oversaturated: ...)"), "bisect"),
           (_v(5.0, True, True), "bisect")]
    units = {v.value: [_unit(rng, 5.0 + v.value, int(v.value))] * 2 for v, _ in seq}
    units[8.0] = [_unit(rng, 40.0, 8)] * 2
    cap = capacity(SPEC, seq, None, units)
    assert cap.capacity == 5.0 and cap.interval_from == "isotonic" and cap.uncertain == (6.0,) and cap.hi >= 6


def test_reprobes_alternate_between_the_bracketing_levels_under_their_own_probe():
    seq = [(_v(1.0, True, True), "start"), (_v(2.0, True, True), "double"), (_v(4.0, False, True), "double"),
           (_v(3.0, True, True), "bisect")]
    cap = _capacity(SPEC, seq)
    assert (cap.capacity, cap.bracket_fail) == (3.0, 4.0)
    assert reprobes_wanted(SPEC, cap, 1) == [(3.0, 1), (4.0, 1), (3.0, 2), (4.0, 2)]
    assert reprobes_wanted(SearchSpec("concurrency", 15.0, 1.0, 8.0), cap, 1) == []  # runs before re-probes


def test_reader_keys_units_by_probe_and_reprobes_never_steer_the_search():
    cells = [{"cell": "x", "load": "concurrency=4", "cell_repeat": 0, "probe": p, "status": "ok",
              "load_stats": {"achieved_answers_per_s": 1.0 + p}} for p in (0, 1, 2)]
    answers = [{"cell": "x", "load": "concurrency=4", "cell_repeat": 0, "probe": p, "admission": i,
                "latency_s": 1.0 if p == 0 else 99.0} for p in (0, 1, 2) for i in range(16)]
    units = level_units(SPEC, "x", cells, answers)
    assert [u["probe"] for u in units[4.0]] == [0, 1, 2] and units[4.0][1]["latencies"] == [99.0] * 16
    v = verdicts(SPEC, "x", cells, answers, 1)[4.0]
    assert v.held and v.p95_s == pytest.approx(1.0)  # probe 0 alone decides the search's path


def test_drift_between_runs_widens_the_interval_to_cover_the_other_run():
    """Two identical searches whose p95 curves differ by a common factor (the machine's drift
    between runs): units inside each run agree, so drift-free intervals exclude each other's
    capacity; with the drift of an A/A band (costtax.load.drift.drift_sd) each covers the other."""
    import math

    const = lambda p95, c: {"latencies": [p95] * (4 * c), "infinite": False}  # noqa: E731
    curve = {4.0: 11.0, 5.0: 13.5, 6.0: 15.6, 7.0: 18.0}

    def run(factor):
        return {c: [const(p * factor, int(c))] * 3 for c, p in curve.items()}

    a, b = run(1.0), run(0.85)  # capacity 5 and 6
    caps = {"a": isotonic_interval(SPEC, a), "b": isotonic_interval(SPEC, b)}
    assert caps == {"a": (5.0, 5.0), "b": (6.0, 6.0)}
    sd = math.log1p(0.30) / (1.959964 * math.sqrt(2))  # an A/A band of ±30% in p95
    lo_a, hi_a = isotonic_interval(SPEC, a, drift_sd=sd)
    lo_b, hi_b = isotonic_interval(SPEC, b, drift_sd=sd)
    assert lo_a <= 5 <= hi_a and lo_a <= 6 <= hi_a and lo_b <= 5 <= hi_b and lo_b <= 6 <= hi_b
    assert isotonic_interval(SPEC, a, drift_sd=0.0) == (5.0, 5.0)  # no band, no drift


def test_drift_sd_reads_the_calibration_before_the_prior(tmp_path, monkeypatch):
    import json
    import math

    from costtax.load.drift import drift_sd, record_calibration

    machine = {"hostname": "h", "cpu": "c", "cpu_count": 2, "gpus": []}
    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path / "noise"))
    monkeypatch.setenv("COSTTAX_NOISE_PRIOR", "none")
    assert drift_sd(machine, "0.1.0") == (0.0, "none")
    (tmp_path / "prior.json").write_text(json.dumps({"bands": {"latency_p95_s": 0.5}}))
    monkeypatch.setenv("COSTTAX_NOISE_PRIOR", str(tmp_path / "prior.json"))
    sd, src = drift_sd(machine, "0.1.0")
    assert sd == pytest.approx(math.log(1.5) / (1.959964 * math.sqrt(2))) and src.startswith("prior ±50.0%")
    record_calibration(machine, "0.1.0", {"latency_p95_s": 0.1}, ("a", "b"), "now")
    sd, src = drift_sd(machine, "0.1.0")
    assert sd == pytest.approx(math.log(1.1) / (1.959964 * math.sqrt(2))) and src.startswith("calibration ±10.0%")
