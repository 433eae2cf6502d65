"""Noise that compare knows (costtax/compare/noise.py): a timing verdict must clear the larger of the limit
and the noise the runs justify (their repeats, else this machine's A/A calibration, else the
reference machine's A/A prior, else their block CIs, else the limit alone); output tokens under
--ignore-eos are judged exactly. Runs are simulated closed loops with a per-run drift and per-wave
shocks, built in memory. The shipped prior is switched off (COSTTAX_NOISE_PRIOR=none) except where
a test sets one, so each source is seen on its own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from costtax.compare.verdicts import CompareConfig, Source, compare_sources, noise_bands
from costtax.compare.estimates import unit_estimates
from costtax.load.levels import LoadLevel
from costtax.compare.noise import load_calibration, record_calibration
from costtax.store.rundata import Answer, RunData, Unit

pytestmark = pytest.mark.unit

LEVEL = LoadLevel("concurrency", 4)
MACHINE = {"hostname": "h", "cpu": "c", "cpu_count": 2, "gpus": [], "device": "cpu: c"}


def _run(rng, *, repeats=3, waves=8, c=4, scale=1.0, tokens=32, drift_sd=0.10, shock_sd=0.10, noise_sd=0.03) -> Source:
    """One run: `repeats` units of `waves` closed-loop waves; each unit drifts as a whole (engine
    state, clocks), each wave shares a shock, each answer has its own noise; latencies in seconds."""
    answers, units = [], []
    for k in range(repeats):
        drift = np.exp(rng.normal(0, drift_sd))
        t = 0.0
        for w in range(waves):
            shock = np.exp(rng.normal(0, shock_sd))
            lats = [scale * drift * shock * np.exp(rng.normal(0, noise_sd)) for _ in range(c)]
            for j, lat in enumerate(lats):
                answers.append(Answer(run_id="r", cell="plain", answer_id=f"a{k}-{w}-{j}", technique="plain", prompt_id=f"p{j}",
                                      text="", calls=1, prompt_tokens=10, output_tokens=tokens, latency_s=float(lat), load=LEVEL,
                                      cell_repeat=k, t_arrival_s=t, t_finish_s=t + float(lat), admission=w * c + j, slot=j))
            t += max(lats)
        units.append(Unit(run_id="r", cell="plain", technique="plain", params={}, status="ok", answers=waves * c,
                          cell_wall_s=t, engine_start_s=None, load=LEVEL, cell_repeat=k))
    rd = RunData(Path("."), {"run_id": "r"}, (), tuple(answers), tuple(units), ())
    per_unit = []
    for u in units:
        lat = [a.latency_s for a in answers if a.cell_repeat == u.cell_repeat]
        per_unit.append((np.percentile(lat, 50), np.percentile(lat, 95), u.answers / u.cell_wall_s))
    med = np.median(np.array(per_unit), axis=0)
    row = {"cell": "plain", "load": LEVEL.label, "latency_p50_s": med[0], "latency_p95_s": med[1], "answers_per_s": med[2],
           "output_tokens_per_answer": float(tokens)}
    return Source("sim", "run", unit_estimates(rd, [row]), {"machine": MACHINE, "version": "0.1.0", "ignore_eos": True})


def _verdicts(res) -> dict[str, str]:
    return {r.metric.name: r.verdict for r in res.rows}


CFG = CompareConfig("old", "new")


@pytest.fixture(autouse=True)
def _no_shipped_prior(monkeypatch):
    monkeypatch.setenv("COSTTAX_NOISE_PRIOR", "none")
TIMING = ("latency_p50_s", "latency_p95_s", "answers_per_s")


def test_identical_runs_with_wave_noise_and_drift_are_all_ok(tmp_path, monkeypatch):
    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    flagged = 0
    for _ in range(40):
        res = compare_sources(_run(rng), _run(rng), CFG)
        assert {r.noise.source for r in res.rows if r.metric.name in TIMING} == {"repeats"}
        flagged += set(_verdicts(res).values()) != {"ok"}
    # family-wise 5% (Bonferroni over the 3 timing rows), the 15% limit as a floor: measured 0 of 40
    assert flagged <= 2, flagged


def test_a_2x_slowdown_is_a_regression_and_32_to_64_tokens_too(tmp_path, monkeypatch):
    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path))
    rng = np.random.default_rng(1)
    v = _verdicts(compare_sources(_run(rng), _run(rng, scale=2.0), CFG))
    assert all(v[m] == "REGRESSION" for m in TIMING), v
    res = compare_sources(_run(rng), _run(rng, tokens=64), CFG)
    tok = [r for r in res.rows if r.metric.name == "output_tokens_per_answer"][0]
    assert tok.verdict == "REGRESSION" and tok.noise.source == "exact" and tok.change == pytest.approx(1.0)
    # swapped, the same change is "better", never a regression
    assert not compare_sources(_run(rng, scale=2.0), _run(rng), CFG).regressions


def test_without_repeats_a_recorded_aa_calibration_absorbs_drift_blocks_cannot_see(tmp_path, monkeypatch):
    """One unit per run: block CIs see wave noise but not the drift between runs, so identical
    runs get flagged; an A/A recorded on this machine sets the band they must clear."""
    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path))
    rng = np.random.default_rng(2)
    pairs = [(_run(rng, repeats=1, drift_sd=0.15), _run(rng, repeats=1, drift_sd=0.15)) for _ in range(8)]
    flagged = sum(bool(compare_sources(a, b, CFG).regressions) for a, b in pairs)
    assert flagged >= 2  # blocks alone: drift reads as regressions
    assert {r.noise.source for r in compare_sources(*pairs[0], CFG).rows if r.metric.name in TIMING} == {"blocks"}
    # calibrate from other A/A pairs of the same machine (max worse-by either way, widened over pairs)
    for _ in range(4):
        bands = noise_bands(compare_sources(_run(rng, repeats=1, drift_sd=0.15), _run(rng, repeats=1, drift_sd=0.15), CFG))
        record_calibration(MACHINE, "0.1.0", bands, ("a", "b"), "now")
    cal = load_calibration(MACHINE, "0.1.0")
    assert set(cal["bands"]) == set(TIMING) and len(cal["recorded"]) == 4
    flagged_cal = sum(bool(compare_sources(a, b, CFG).regressions) for a, b in pairs)
    assert flagged_cal < flagged
    res = compare_sources(*pairs[0], CFG)
    assert {r.noise.source for r in res.rows if r.metric.name in TIMING} == {"calibration"}
    assert any(cal["path"] in n for n in res.notes)
    # a 2x slowdown still clears the band
    assert all(_verdicts(compare_sources(_run(rng, repeats=1, drift_sd=0.15), _run(rng, repeats=1, drift_sd=0.15, scale=2.0), CFG))[m]
               == "REGRESSION"
               for m in ("latency_p50_s", "latency_p95_s"))


def test_no_noise_estimate_judges_on_the_limit_alone():
    """A batch run (one block) without repeats or calibration: never 'no estimate, so ok'."""
    from costtax.compare.verdicts import judge, METRIC_BY_NAME
    from costtax.compare.estimates import Estimate
    from costtax.compare.noise import timing_noise

    old, new = Estimate(1.0, ci_from="blocks"), Estimate(1.2, ci_from="blocks")
    noise = timing_noise("latency_p50_s", old, new, None)
    assert noise.source == "none" and noise.value == 0
    assert judge(METRIC_BY_NAME["latency_p50_s"], old, new, 0.15, noise) == (pytest.approx(0.2), "REGRESSION")
    assert judge(METRIC_BY_NAME["latency_p50_s"], old, Estimate(1.1), 0.15, noise)[1] == "ok"


def test_plugin_cost_assertion_cites_the_machine_noise_band(tmp_path, monkeypatch):
    from costtax.compare.assertions import CellResult, CosttaxLimitError, assert_cost
    from costtax.compare.estimates import Estimate

    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path / "noise"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"run_id": "r", "provenance": {"machine": MACHINE, "versions": {"costtax": "0.1.0"}}}))
    res = CellResult("plain", run, {"latency_p95_s": 1.1}, (), {"latency_p95_s": Estimate(1.1)})
    with pytest.raises(CosttaxLimitError) as exc:
        assert_cost(res, max_latency_p95_s=1.0)
    assert "no A/A calibration of this machine for latency_p95_s" in str(exc.value)
    path = record_calibration(MACHINE, "0.1.0", {"latency_p95_s": 0.2}, ("a", "b"), "now")
    with pytest.raises(CosttaxLimitError) as exc:
        assert_cost(res, max_latency_p95_s=1.0)
    assert f"machine noise band (A/A calibration {path}): identical runs differed by up to 20% on latency_p95_s; within it" in str(exc.value)
    # no calibration, a reference prior: cited as the reference machine's
    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path / "noise2"))
    (tmp_path / "prior.json").write_text(json.dumps({"bands": {"latency_p95_s": 0.05}}))
    monkeypatch.setenv("COSTTAX_NOISE_PRIOR", str(tmp_path / "prior.json"))
    with pytest.raises(CosttaxLimitError) as exc:
        assert_cost(res, max_latency_p95_s=1.0)
    assert "the reference machine's" in str(exc.value) and "up to 5%: beyond it" in str(exc.value)


def _write_prior(path: Path, rng, pairs: int = 4, drift_sd: float = 0.15) -> Path:
    """A reference machine's prior built by scripts/noise_prior.py's rule: the largest worse-by per
    metric over pairs of identical one-unit runs."""
    bands: dict[str, float] = {}
    for _ in range(pairs):
        for k, v in noise_bands(compare_sources(_run(rng, repeats=1, drift_sd=drift_sd), _run(rng, repeats=1, drift_sd=drift_sd), CFG)).items():
            bands[k] = max(bands.get(k, 0.0), v)
    path.write_text(json.dumps({"bands": bands, "pairs": pairs, "machine": {"cpu": "ref", "cpu_count": 2}}))
    return path


def test_a_machine_without_calibration_is_judged_by_the_reference_prior(tmp_path, monkeypatch):
    """Fresh clone, no calibration: the prior (the reference machine's A/A) sets the band; block
    CIs alone flag identical runs, the prior does not, and a 2x slowdown still clears it."""
    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path / "noise"))
    rng = np.random.default_rng(5)
    pairs = [(_run(rng, repeats=1, drift_sd=0.15), _run(rng, repeats=1, drift_sd=0.15)) for _ in range(8)]
    blocks_only = sum(bool(compare_sources(a, b, CFG).regressions) for a, b in pairs)
    prior = _write_prior(tmp_path / "prior.json", rng, pairs=8)
    monkeypatch.setenv("COSTTAX_NOISE_PRIOR", str(prior))
    with_prior = sum(bool(compare_sources(a, b, CFG).regressions) for a, b in pairs)
    assert blocks_only >= 2 and with_prior < blocks_only, (blocks_only, with_prior)
    res = compare_sources(*pairs[0], CFG)
    assert {r.noise.source for r in res.rows if r.metric.name in TIMING} == {"prior"}
    assert any("reference machine" in n and str(prior) in n for n in res.notes)
    v = _verdicts(compare_sources(_run(rng, repeats=1, drift_sd=0.15), _run(rng, repeats=1, drift_sd=0.15, scale=2.0), CFG))
    assert v["latency_p50_s"] == v["latency_p95_s"] == "REGRESSION", v
    # a calibration of this machine takes precedence over the prior
    record_calibration(MACHINE, "0.1.0", {m: 0.01 for m in TIMING}, ("a", "b"), "now")
    assert {r.noise.source for r in compare_sources(*pairs[0], CFG).rows if r.metric.name in TIMING} == {"calibration"}


def test_a_band_is_raised_to_the_block_cis_of_a_small_noisy_run(tmp_path, monkeypatch):
    from costtax.compare.noise import timing_noise
    from costtax.compare.estimates import Estimate

    old, new = Estimate(1.0, 0.5, 1.5, ci_from="blocks"), Estimate(1.0, 0.6, 1.4, ci_from="blocks")
    prior = {"bands": {"latency_p50_s": 0.1}, "pairs": 3, "path": "p"}
    n = timing_noise("latency_p50_s", old, new, None, 0.05, None, prior)
    assert n.source == "prior" and n.value == pytest.approx((0.5 ** 2 + 0.4 ** 2) ** 0.5) and "block CIs" in n.detail
    tight = timing_noise("latency_p50_s", Estimate(1.0, 0.99, 1.01), Estimate(1.0, 0.99, 1.01), None, 0.05, None, prior)
    assert tight.source == "prior" and tight.value == pytest.approx(0.1)


def test_peak_memory_moves_by_its_noise_band_not_on_any_change(tmp_path, monkeypatch):
    """Peak memory has one value per run: a 2% A/A wobble is "ok", beyond the band it is "better"."""
    from costtax.compare.verdicts import METRIC_BY_NAME, judge
    from costtax.compare.estimates import Estimate
    from costtax.compare.noise import timing_noise

    m = METRIC_BY_NAME["peak_memory_bytes"]
    old = Estimate(4.4e9)
    none = timing_noise(m.name, old, Estimate(4.3e9), None)
    assert none.source == "none" and judge(m, old, Estimate(4.3e9), None, none)[1] == "ok"
    prior = {"bands": {"peak_memory_bytes": 0.03}, "pairs": 3, "path": "p"}
    assert judge(m, old, Estimate(4.3e9), None, timing_noise(m.name, old, Estimate(4.3e9), None, prior=prior))[1] == "ok"
    assert judge(m, old, Estimate(3.0e9), None, timing_noise(m.name, old, Estimate(3.0e9), None, prior=prior))[1] == "better"
    assert judge(m, old, Estimate(6.0e9), 0.10, timing_noise(m.name, old, Estimate(6.0e9), None, prior=prior))[1] == "REGRESSION"


@pytest.mark.parametrize("value,needle", [("/nonexistent/prior.json", "unreadable"), ("{bad", "unreadable"), ('{"x": 1}', '"bands"')])
def test_a_bad_prior_file_is_a_one_line_error_naming_the_variable(tmp_path, monkeypatch, value, needle):
    from costtax.compare.noise import load_prior
    from costtax.errors import ConfigError

    if not value.startswith("/"):
        (tmp_path / "p.json").write_text(value)
        value = str(tmp_path / "p.json")
    monkeypatch.setenv("COSTTAX_NOISE_PRIOR", value)
    with pytest.raises(ConfigError) as exc:
        load_prior()
    assert "COSTTAX_NOISE_PRIOR" in str(exc.value) and needle in str(exc.value) and "\n" not in str(exc.value)


def test_doctor_says_which_noise_band_compare_will_use(tmp_path, monkeypatch):
    from costtax.doctor import noise_line

    monkeypatch.setenv("COSTTAX_NOISE_DIR", str(tmp_path / "noise"))
    assert "no A/A calibration and no prior" in noise_line(MACHINE, "0.1.0")
    (tmp_path / "prior.json").write_text(json.dumps({"bands": {"latency_p95_s": 0.7}}))
    monkeypatch.setenv("COSTTAX_NOISE_PRIOR", str(tmp_path / "prior.json"))
    assert "reference machine's" in noise_line(MACHINE, "0.1.0") and "p95 ±70%" in noise_line(MACHINE, "0.1.0")
    path = record_calibration(MACHINE, "0.1.0", {"latency_p95_s": 0.12}, ("a", "b"), "now")
    assert noise_line(MACHINE, "0.1.0") == f"noise         A/A calibration of this machine: {path} (p95 ±12%)"
