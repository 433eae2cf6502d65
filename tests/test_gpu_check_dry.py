"""bench/gpu_check.py --dry runs end to end on CPU (Triton interpreter) and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"


@pytest.mark.timeout(120)
def test_gpu_check_dry(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--dry"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=110,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())

    for key in ("dry_run", "date", "env", "git", "kernel_path", "checks", "all_checks_passed",
                "bandwidth", "timings", "hf", "summary", "targets", "elapsed_s"):
        assert key in report, key
    assert report["dry_run"] is True
    for key in ("card", "torch", "triton", "cuda"):
        assert key in report["env"]
    assert "commit" in report["git"]

    # Every kernel checked, every check passed, on the interpreter path.
    assert report["all_checks_passed"] is True
    assert {c["op"] for c in report["checks"]} == {"reward_head", "judge_head", "group_select"}
    assert all(c["passed"] for c in report["checks"])
    if report["kernel_path"] != "reference":  # triton importable: the interpreter ran
        assert report["kernel_path"] == "triton-interpret"
    for c in report["checks"]:
        assert c["kernel_vs_reference"]["passed"] and c["reference_vs_naive"]["passed"]
        assert {"max_abs_err", "max_rel_err"} <= set(c["kernel_vs_reference"])

    assert report["bandwidth"]["bytes_per_s"] > 0
    ops = {t["op"] for t in report["timings"]}
    assert ops == {"reward_head", "judge_head", "group_select"}
    for t in report["timings"]:
        for key in ("kernel_s", "bytes_min", "floor_s", "achieved_bytes_per_s", "ratio_to_floor", "launch_bound", "naive", "targets"):
            assert key in t, (t["op"], key)
        assert t["kernel_s"] > 0 and t["floor_s"] > 0
    # The transformers part either ran and agreed, or recorded why not.
    hf = report["hf"]
    assert ("error" in hf) or hf["agree"] is True
    assert "all checks passed: True" in res.stdout
