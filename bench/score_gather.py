"""What `--score-gather-ms` does to best-of-N under a closed loop on the real engine: reward passes
(pairs per pass, passes that held every answer in flight), p95 by level (and whether it is
monotone in concurrency), and the capacity the search found, per run, grouped by the gather
setting each run recorded. Reads run directories of `--load search` (or concurrency sweeps):

    python bench/score_gather.py RUN_DIR [RUN_DIR ...] --json OUT.json

scripts/figures.py renders the docs' and README's sentence on the gather default from OUT.json.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capacity_repeats import cell_results  # noqa: E402


def _level(load: str) -> int | None:
    return int(load.split("=")[1]) if load.startswith("concurrency=") else None


def run_result(run_dir: Path) -> dict:
    run = json.loads((run_dir / "run.json").read_text())
    gather = float((run.get("config") or {}).get("score_gather_ms") or 0.0)
    passes: dict[int, list[tuple[int, bool]]] = {}
    for line in (run_dir / "cells.jsonl").read_text().splitlines():
        r = json.loads(line)
        c, n = _level(r.get("load", "batch")), int((r.get("params") or {}).get("n") or 1)
        if c is None or r.get("status") != "ok" or not r.get("score_batches"):
            continue
        passes.setdefault(c, []).extend((int(b["pairs"]), int(b["pairs"]) >= c * n) for b in r["score_batches"])
    p95: dict[int, float] = {}
    for r in csv.DictReader(open(run_dir / "summary.csv", encoding="utf-8")):
        c = _level(r.get("load", ""))
        if r["cell"].startswith("bon") and c is not None and r.get("latency_p95_s"):
            p95[c] = float(r["latency_p95_s"])
    levels = sorted(p95)
    inversions = [f"{a}>{b}" for i, a in enumerate(levels) for b in levels[i + 1:] if p95[a] > p95[b]]
    multi = [x for c, xs in passes.items() if c >= 2 for x in xs]  # c=1 holds one answer: always "full"
    cap = {k: v for k, v in cell_results(run_dir).items() if k.startswith("bon")}
    return {
        "run": run_dir.name, "score_gather_ms": gather,
        "mean_pairs_per_pass_c2plus": statistics.mean(p for p, _ in multi) if multi else None,
        "full_pass_share_c2plus": sum(f for _, f in multi) / len(multi) if multi else None,
        "passes_by_level": {str(c): [p for p, _ in xs] for c, xs in sorted(passes.items())},
        "p95_by_level_s": {str(c): p95[c] for c in levels}, "p95_inversions": inversions,
        "capacity": {k: {"point": v["point"], "lo": v["lo"], "hi": v["hi"], "answers_per_s": v["answers_per_s"]} for k, v in cap.items()},
        "foreign_cpu_share_max": max((v["foreign_cpu_share_max"] or 0.0) for v in cap.values()) if cap else None,
    }


def main(argv: list[str]) -> int:
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    runs = [run_result(Path(d)) for d in argv]
    text = json.dumps({"runs": runs}, indent=1) + "\n"
    if out:
        Path(out).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
