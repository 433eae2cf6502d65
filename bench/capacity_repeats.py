"""Does each capacity interval cover the other runs? Repeats of one `--load search` command, read
from their summary.csv (one row per searched cell carries the cell's result):

    python bench/capacity_repeats.py RUN_DIR RUN_DIR [RUN_DIR ...] > OUT.md    # and OUT.json beside it with --json OUT.json

Per cell: every run's capacity (concurrency or rate) and its interval, whether each interval
contains every other run's point estimate, and whether any interval is zero-width while the runs
disagree (issue 27's done-when). Runs of the same command only: the script does not check that.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def _f(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def cell_results(run_dir: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    run = json.loads((run_dir / "run.json").read_text())
    for r in csv.DictReader(open(run_dir / "summary.csv", encoding="utf-8")):
        if r.get("search_status") in (None, "") or r["cell"] in out:
            continue
        point = _f(r.get("capacity_concurrency"))
        if point is None:
            point = _f(r.get("capacity_rate"))
        out[r["cell"]] = {
            "point": point, "lo": _f(r.get("capacity_lo")), "hi": _f(r.get("capacity_hi")),
            "answers_per_s": _f(r.get("capacity_answers_per_s")),
            "answers_per_s_lo": _f(r.get("capacity_answers_per_s_lo")), "answers_per_s_hi": _f(r.get("capacity_answers_per_s_hi")),
            "status": r.get("search_status"), "probes": r.get("search_probes"), "bracket": r.get("search_bracket"),
            "foreign_cpu_share_max": None, "run_id": run.get("run_id"), "started_at": run.get("started_at"),
            "finished_at": run.get("finished_at"),
        }
    for r in csv.DictReader(open(run_dir / "summary.csv", encoding="utf-8")):
        s = _f(r.get("foreign_cpu_share"))
        if r["cell"] in out and s is not None:
            cur = out[r["cell"]]["foreign_cpu_share_max"]
            out[r["cell"]]["foreign_cpu_share_max"] = s if cur is None else max(cur, s)
    return out


def check(runs: dict[str, dict[str, dict]]) -> dict:
    cells = sorted({c for r in runs.values() for c in r})
    verdict: dict[str, dict] = {}
    for cell in cells:
        got = {name: r[cell] for name, r in runs.items() if cell in r}
        points = {n: g["point"] for n, g in got.items()}
        agree = len(set(points.values())) == 1
        covers, zero = {}, {}
        for n, g in got.items():
            others = [p for m, p in points.items() if m != n and p is not None]
            covers[n] = g["lo"] is not None and g["hi"] is not None and all(g["lo"] <= p <= g["hi"] for p in others)
            zero[n] = g["lo"] is not None and g["lo"] == g["hi"]
        verdict[cell] = {"points": points, "every_interval_covers_the_others": all(covers.values()),
                         "covers": covers, "zero_width": zero,
                         "zero_width_only_where_all_agree": agree or not any(zero.values())}
    return verdict


def markdown(runs: dict[str, dict[str, dict]], verdict: dict) -> str:
    lines = ["| run | cell | status | capacity | interval | answers/s (interval) | probes | max foreign_cpu_share |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        for cell, g in sorted(r.items()):
            fmt = lambda x, s="{:g}": "—" if x is None else s.format(x)  # noqa: E731
            lines.append(f"| {name} | `{cell}` | {g['status']} | {fmt(g['point'])} | {fmt(g['lo'])}..{fmt(g['hi'])} | "
                         f"{fmt(g['answers_per_s'], '{:.3f}')} ({fmt(g['answers_per_s_lo'], '{:.3f}')}..{fmt(g['answers_per_s_hi'], '{:.3f}')}) | "
                         f"{g['probes'] or '—'} | {fmt(g['foreign_cpu_share_max'], '{:.3f}')} |")
    lines += ["", "| cell | points | every interval covers the other runs' points | zero-width only where all agree |", "|---|---|---|---|"]
    for cell, v in verdict.items():
        lines.append(f"| `{cell}` | {', '.join(f'{k}: {p:g}' if p is not None else f'{k}: —' for k, p in v['points'].items())} | "
                     f"{'yes' if v['every_interval_covers_the_others'] else 'NO'} | {'yes' if v['zero_width_only_where_all_agree'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out_json = None
    if "--json" in argv:
        i = argv.index("--json")
        out_json = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    runs = {Path(d).name: cell_results(Path(d)) for d in argv}
    verdict = check(runs)
    sys.stdout.write(markdown(runs, verdict))
    if out_json:
        Path(out_json).write_text(json.dumps({"runs": runs, "verdict": verdict}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
