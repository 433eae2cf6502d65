"""What --client-workers buys: costtax profile (plain, --engine openai) against the stand-in
server (bench/standin_server.py: TTFT 50 ms, one token per 20 ms, 64 tokens: 1.31 s per answer)
at concurrency 64 and 256, 1 and 2 client workers; answers/s, TTFT p50, latency p50 and the
client's loop lag and CPU per level, with the machine's load recorded next to every number.

    PYTHONPATH=$PWD .venv/bin/python bench/client_workers.py --answers 1000 --out bench/results/client-workers-DATE.json

summary.csv is not built (self-BLEU over 1,000 answers is the slow part of issue 28, measured
elsewhere): the numbers come from the run directories' records.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    from costtax.provenance import cpu_name as name  # the one /proc/cpuinfo reader

    return name()


def _load() -> dict:
    from costtax.metering.contention import sample_now

    return {"loadavg_1m": os.getloadavg()[0], "foreign_cpu_share_1s": sample_now(1.0)}


def one(url: str, out: Path, concurrency: int, workers: int, answers: int, seed: int) -> dict:
    import costtax.run.profile  # noqa: F401  (the package exports a function of the same name)
    import costtax.report as R

    P = sys.modules["costtax.run.profile"]
    from costtax.config import RunConfig

    P.rebuild_summary = lambda *a, **k: None  # records only: summary.csv is not what is measured here
    R.write_summary = lambda *a, **k: None
    R.write_plots = lambda *a, **k: None
    limit = 50
    cfg = RunConfig(engine="openai", base_url=url, techniques=("plain",), prompts=("helpful",), limit=limit,
                    repeats=max(1, answers // limit), max_tokens=64, load=(f"concurrency={concurrency}",), warmup_answers=0,
                    eval_reward_model="none", client_workers=workers, oversaturation_stop=False, seed=seed, out=str(out))
    before = _load()
    t0 = time.monotonic()
    run = Path(P.profile(cfg).run_dir)
    wall = time.monotonic() - t0
    after = _load()
    cell = json.loads((run / "cells.jsonl").read_text().splitlines()[-1])
    calls = [json.loads(x) for x in (run / "calls.jsonl").read_text().splitlines() if x.strip()]
    ans = [json.loads(x) for x in (run / "answers.jsonl").read_text().splitlines() if x.strip()]
    ttft = [c["ttft_s"] for c in calls if c.get("ttft_s") is not None]
    return {
        "concurrency": concurrency, "client_workers": workers, "answers": len(ans), "status": cell["status"],
        "achieved_answers_per_s": cell["load_stats"].get("achieved_answers_per_s"),
        "ideal_answers_per_s": concurrency / (0.050 + 0.020 * 63),
        "ttft_p50_s": statistics.median(ttft) if ttft else None,
        "latency_p50_s": statistics.median(a["latency_s"] for a in ans) if ans else None,
        "client": cell.get("client"),
        "cell_wall_s": cell["cell_wall_s"], "run_wall_s": wall,
        "machine_load_before": before, "machine_load_after": after,
    }


def annotate(doc: dict) -> dict:
    """Each result's client_lag_share_of_ttft and flag_client_lag, by the summary's own rule
    (costtax/report/client.py, CLIENT_LAG_TTFT_SHARE)."""
    from costtax.metering.client_gauge import CLIENT_LAG_TTFT_SHARE
    from costtax.report.client import lag_share_of_ttft

    for r in doc["results"]:
        share = lag_share_of_ttft({"client_lag_p50_s": (r.get("client") or {}).get("lag_p50_s"), "ttft_p50_s": r.get("ttft_p50_s")})
        r["client_lag_share_of_ttft"] = share
        r["flag_client_lag"] = share is not None and share >= CLIENT_LAG_TTFT_SHARE
    doc["flag_rule"] = f"client lag p50 >= {CLIENT_LAG_TTFT_SHARE:g} x TTFT p50"
    return doc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", default="/tmp/costtax-client-workers-bench")
    ap.add_argument("--annotate", action="store_true", help="only add the flag columns to an existing --out file")
    a = ap.parse_args(argv)
    if a.annotate:
        Path(a.out).write_text(json.dumps(annotate(json.loads(Path(a.out).read_text())), indent=1) + "\n")
        return
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "standin_server.py"), "--port", "0", "--ttft-ms", "50", "--token-ms", "20"],
                              stdout=subprocess.PIPE, text=True)
    port = server.stdout.readline().split()[1]
    url = f"http://127.0.0.1:{port}/v1"
    results = []
    try:
        for c in a.concurrency:
            for w in a.workers:  # 1 and 2 workers back to back at each concurrency: the same machine state
                r = one(url, Path(a.runs) / f"c{c}-w{w}-{int(time.time())}", c, w, a.answers, 0)
                print(json.dumps({k: r[k] for k in ("concurrency", "client_workers", "achieved_answers_per_s", "ttft_p50_s", "latency_p50_s")}), flush=True)
                results.append(r)
    finally:
        server.terminate()
        server.wait(10)
    doc = {
        "what": "costtax profile -t plain --engine openai against bench/standin_server.py (TTFT 50 ms, 20 ms/token, 64 tokens), "
                "concurrency levels, 1 vs 2 --client-workers; summary.csv not built",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "shared": "yes: other jobs ran on the same cores during the measurement (see machine_load_* per run)"},
        "server": "bench/standin_server.py in its own process on the same machine",
        "answers_per_level": a.answers,
        "results": results,
    }
    Path(a.out).write_text(json.dumps(annotate(doc), indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
