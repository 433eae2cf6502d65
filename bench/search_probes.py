"""The probes of a `--load search` run, one table row per probe, from its summary.csv:

    python bench/search_probes.py RUN_DIR > RUN_DIR/probes.md
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def f(v: str, fmt: str) -> str:
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return "—"


def main(run_dir: str) -> None:
    rows = [r for r in csv.DictReader(open(Path(run_dir) / "summary.csv")) if r.get("search_probe_index") not in ("", None)]
    rows.sort(key=lambda r: (r["cell"] != "plain", r["cell"], int(float(r["search_probe_index"]))))
    print("| cell | probe | role | level | answers | p95 s (CI95) | achieved answers/s | held | stop | foreign_cpu_share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['cell']}` | {int(float(r['search_probe_index']))} | {r['search_role']} | {r['load']} | {r['answers']}/{int(float(r['search_planned_answers']))} | "
              f"{f(r['latency_p95_s'], '{:.2f}')} ({f(r['latency_p95_ci95_lo_s'], '{:.2f}')}..{f(r['latency_p95_ci95_hi_s'], '{:.2f}')}) | "
              f"{f(r['achieved_answers_per_s'], '{:.3f}')} | {r['search_held']} | {(r.get('stop_reason') or '').split(':')[0]} | {f(r.get('foreign_cpu_share'), '{:.2f}')} |")
    print()
    print("| cell | search_status | bracket | capacity_concurrency | capacity_answers_per_s | interval (concurrency) | interval (answers/s) |")
    print("|---|---|---|---|---|---|---|")
    seen = set()
    for r in rows:
        if r["cell"] in seen:
            continue
        seen.add(r["cell"])
        print(f"| `{r['cell']}` | {r['search_status']} | {r['search_bracket'] or '—'} | {f(r['capacity_concurrency'], '{:.0f}')} | "
              f"{f(r['capacity_answers_per_s'], '{:.3f}')} | {f(r['capacity_lo'], '{:g}')}..{f(r['capacity_hi'], '{:g}')} | "
              f"{f(r['capacity_answers_per_s_lo'], '{:.3f}')}..{f(r['capacity_answers_per_s_hi'], '{:.3f}')} |")


if __name__ == "__main__":
    main(sys.argv[1])
