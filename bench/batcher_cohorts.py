"""Reward micro-batcher passes under a closed loop, from run directories' cells.jsonl.

For every bon cell x load level: the pairs of each reward pass in order, the scoring seconds
per pair of passes by size, the share of the wall the passes took, and whether the answers in
flight scored in one cohort (every pass holds all C answers: lockstep) or split into cohorts
that alternate on the reward model. Usage:

    python bench/batcher_cohorts.py RUN_DIR [RUN_DIR ...] > bench/results/batcher-cohorts-<date>.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(run_dir: Path):
    for line in (run_dir / "cells.jsonl").read_text().splitlines():
        r = json.loads(line)
        b = r.get("score_batches") or []
        if not b or r.get("status") != "ok":
            continue
        load = r.get("load", "batch")
        c = int(load.split("=")[1]) if load.startswith("concurrency=") else None
        n = int((r.get("params") or {}).get("n") or 1)
        pairs = [x["pairs"] for x in b]
        full = [x for x in b if c and x["pairs"] >= c * n]
        part = [x for x in b if not (c and x["pairs"] >= c * n)]
        per_pair = lambda xs: sum(x["score_s"] for x in xs) / sum(x["pairs"] for x in xs) if xs else None  # noqa: E731
        yield {
            "run": run_dir.name, "cell": r["cell"], "load": load, "passes": " ".join(map(str, pairs)),
            "mean_pairs": sum(pairs) / len(pairs), "full_passes": f"{len(full)}/{len(b)}",
            "s_per_pair_full": per_pair(full), "s_per_pair_partial": per_pair(part),
            "score_share": sum(x["score_s"] for x in b) / r["cell_wall_s"], "answers_per_s": r["answers"] / r["cell_wall_s"],
            "foreign": (r.get("meter") or {}).get("foreign_cpu_share"),
        }


def main(argv: list[str]) -> None:
    fmt = lambda v, f: "—" if v is None else f.format(v)  # noqa: E731
    print("| run | cell | load | pairs per pass, in order | mean pairs | passes with every answer in flight | scoring s/pair (full passes) | s/pair (partial) | scoring share of wall | answers/s | foreign_cpu_share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in argv:
        for r in rows(Path(d)):
            print(f"| {r['run']} | `{r['cell']}` | {r['load']} | {r['passes']} | {r['mean_pairs']:.1f} | {r['full_passes']} | "
                  f"{fmt(r['s_per_pair_full'], '{:.3f}')} | {fmt(r['s_per_pair_partial'], '{:.3f}')} | {r['score_share']:.2f} | "
                  f"{r['answers_per_s']:.3f} | {fmt(r['foreign'], '{:.3f}')} |")


if __name__ == "__main__":
    main(sys.argv[1:])
