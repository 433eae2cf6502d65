"""bench/gpu_check.py on CPU (--dry; Triton interpreter): JSON lines written step by step,
the budget respected (steps that do not fit skipped and recorded, a step that overruns cut by
the watchdog), a killed run leaving what it measured, and losses to torch reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
SCRIPT = BENCH / "gpu_check.py"
sys.path.insert(0, str(BENCH))

import gpu_check_timing as timing  # noqa: E402

ENV = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
           TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _lines(out: Path) -> list[dict]:
    text = (out / "gpu_check.jsonl").read_text()
    assert text.endswith("\n"), "the last record is not a complete line"
    return [json.loads(line) for line in text.splitlines()]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_dry_run_end_to_end(tmp_path):
    t0 = time.monotonic()
    res = _run(["--out", str(tmp_path), "--dry", "--budget-s", "240"], timeout=280)
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    recs = _lines(tmp_path)
    steps = [r["step"] for r in recs]
    assert steps[0] == "env" and steps[-1] == "summary"
    assert recs[0]["dry_run"] is True and recs[0]["git_commit"] is not None
    assert not [r for r in recs if "skipped" in r or "error" in r], [r for r in recs if "skipped" in r or "error" in r]
    times = [r["t_s"] for r in recs]
    assert times == sorted(times) and times[-1] <= wall

    # Correctness: every op, on the auto path and on the forced interpreter kernel.
    checks = [r for r in recs if r["step"].startswith("checks:")]
    assert {c["op"] for c in checks} == {"reward_head", "judge_head", "group_select"}
    assert all(c["passed"] for c in checks)
    assert {c["path"] for c in checks} == {"auto", "triton-interpret"}
    assert {c["split_h"] for c in checks if c["op"] == "judge_head"} == {None, 1, 3}

    # Timings: the public op, the forced kernel and >= 1 torch expression, both measures, and
    # verdicts that follow from the numbers.
    tim = [r for r in recs if r["step"].startswith("timing:")]
    assert {r["op"] for r in tim} == {"reward_head", "judge_head", "group_select"}
    for r in tim:
        torch_impls = [k for k in r["impls"] if k.startswith("torch_")]
        assert torch_impls and {"op_auto", "kernel"} <= set(r["impls"])
        for who, key in (("op_auto", "op_auto"), ("kernel", "kernel_forced")):
            v = r[key]
            best_gpu = min(r["impls"][k]["gpu_us"] for k in torch_impls)
            best_host = min(r["impls"][k]["host_us"] for k in torch_impls)
            assert v["best_torch_gpu_us"] == best_gpu and v["best_torch_host_us"] == best_host
            assert v["loses_gpu"] == timing.loses(r["impls"][who]["gpu_us"], best_gpu)
            assert v["loses_host"] == timing.loses(r["impls"][who]["host_us"], best_host)
            assert v["never_lose_ok"] == (not v["loses_gpu"] and not v["loses_host"])
    # The interpreter (milliseconds a call) loses to torch's microseconds on reward_head:
    # the loss must be marked, listed in the summary and printed, without failing a dry run.
    rh = [r for r in tim if r["op"] == "reward_head"]
    assert all(not r["op_auto"]["never_lose_ok"] for r in rh)
    summary = recs[-1]
    assert set(summary["kernel_losses"]) >= {f"reward_head@{r['shape']}" for r in rh}
    assert "kernel loses to torch at: reward_head@" in res.stdout and "LOSS" in res.stdout
    cross = next(r for r in recs if r["step"] == "crossover")
    assert cross["kernel_lost_at_TH"] == sorted(r["T"] * r["H"] for r in rh)

    # transformers parts ran and agreed (an error is a failure here, not a pass).
    hf = next(r for r in recs if r["step"] == "hf_scoring")
    assert "error" not in hf and hf["agree"] is True
    eng = next(r for r in recs if r["step"] == "hf_engine")
    assert "error" not in eng and len(eng["call_wall_s"]) == 2 and eng["tokens_per_call"] == 16

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["records"] == recs and report["cut_by_watchdog"] is None


def _driver(out: Path, budget_s: float, patch: str) -> subprocess.CompletedProcess:
    """Run gpu_check.main in a child process after ``patch`` (Python) adjusted it."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(BENCH)!r}, {str(REPO)!r}]
        import gpu_check, gpu_check_correct
    """) + textwrap.dedent(patch) + textwrap.dedent(f"""
        sys.exit(gpu_check.main(["--out", {str(out)!r}, "--dry", "--budget-s", "{budget_s:g}", "--no-hf"]))
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(120)
def test_budget_skips_what_does_not_fit(tmp_path):
    """Steps whose estimate exceeds the budget left are skipped with a reason (not started);
    the cheap ones still run, and the run ends inside its budget."""
    t0 = time.monotonic()
    res = _driver(tmp_path, 30, """
        for name in ("checks:reward_head", "checks:judge_head", "checks:group_select", "timing"):
            gpu_check.STEP_ESTIMATE_S[name] = (1000, 1000)
        gpu_check.STEP_ESTIMATE_S["bandwidth"] = (0.5, 0.5)
    """)
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = _lines(tmp_path)
    skipped = {r["step"]: r["skipped"] for r in recs if "skipped" in r}
    assert set(skipped) == {"checks:reward_head", "checks:judge_head", "checks:group_select", "timing:tiny-bon4",
                            "timing:tiny-bon6", "timing:tiny-groups", "hf_scoring", "hf_engine"}
    assert skipped["checks:judge_head"].startswith("needs ~1000 s") and skipped["hf_engine"] == "--no-hf"
    assert not [r for r in recs if r["step"].startswith(("checks:", "timing:")) and "skipped" not in r]
    assert [r for r in recs if r["step"] == "bandwidth" and r["bytes_per_s"] > 0]
    assert recs[-1]["step"] == "summary" and "checks:judge_head" in recs[-1]["skipped_steps"]
    assert recs[-1]["t_s"] < 30 and wall < 30 + 8
    assert "SKIPPED checks:judge_head" in res.stdout


@pytest.mark.timeout(120)
def test_skip_option(tmp_path):
    res = _run(["--out", str(tmp_path), "--dry", "--budget-s", "60", "--no-hf", "--skip", "checks,timing:tiny-bon"],
               timeout=90)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = _lines(tmp_path)
    skipped = {r["step"] for r in recs if r.get("skipped") == "--skip"}
    assert skipped == {"checks:reward_head", "checks:judge_head", "checks:group_select", "timing:tiny-bon4",
                       "timing:tiny-bon6"}
    ran = [r for r in recs if r["step"] == "timing:tiny-groups" and "impls" in r]
    assert len(ran) == 1 and ran[0]["op"] == "group_select"


@pytest.mark.timeout(120)
def test_watchdog_cuts_a_step_that_overruns(tmp_path):
    """A step that fits its estimate but then hangs is cut at the budget: what ran before it
    stays on disk, the cut is recorded, the exit status says so."""
    t0 = time.monotonic()
    res = _driver(tmp_path, 15, """
        gpu_check_correct.CHECKS = {"reward_head": lambda d, dry: time.sleep(120)}
        gpu_check.STEP_ESTIMATE_S["checks:reward_head"] = (1, 1)  # claims to be quick
    """)
    wall = time.monotonic() - t0
    assert res.returncode == 4, res.stdout[-2000:] + res.stderr[-2000:]
    assert wall < 15 + 8
    recs = _lines(tmp_path)
    assert recs[0]["step"] == "env"
    cut = [r for r in recs if r.get("cut_by_watchdog")]
    assert len(cut) == 1 and cut[0]["step"] == "checks:reward_head"
    assert recs[-1]["step"] == "summary"


@pytest.mark.timeout(120)
def test_killed_run_leaves_complete_lines(tmp_path):
    """SIGKILL in the middle: every step finished so far is on disk as whole JSON lines."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry", "--budget-s", "240"],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp_path / "gpu_check.jsonl"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().count("\n") >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = _lines(tmp_path)
    assert len(recs) >= 2 and recs[0]["step"] == "env"
    assert recs[1]["step"].startswith("checks:") and "passed" in recs[1]
    assert not (tmp_path / "gpu_check.json").exists()  # the run never reached its end
