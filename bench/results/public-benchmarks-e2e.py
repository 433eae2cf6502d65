"""End-to-end check of the public-benchmark scorers on real profile runs (vLLM on CPU).

costtax's profile() is used as a library, unchanged; the per-answer scoring and the cell
aggregates that the cell runner will compute once wired in are computed here from the run
directories' answers.jsonl:

  run A: humaneval, --limit 10, plain and bon:n=4, max_tokens 384 (SourceSpec default)
  run B: advbench + helpful, --limit 20, plain and cai:rounds=1, max_tokens 64

Run: PYTHONPATH=. HF_HUB_OFFLINE=1 python bench/results/public-benchmarks-e2e.py OUT_DIR [--rescore]
(--rescore: skip the profile runs, score the answers already in OUT_DIR again)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def score_run(run_dir: Path, config, judge) -> dict:
    from costtax.report.scored_answers import scored_deltas, summarize_scored_answers
    from costtax.prompts import load_prompts
    from costtax.prompts.grading import evaluate_answers

    prompts = {p.id: p for p in load_prompts(config.prompts, limit=config.limit, seed=config.seed)}
    answers = [json.loads(l) for l in (run_dir / "answers.jsonl").read_text().splitlines() if l.strip()]
    by_cell: dict[str, list[dict]] = {}
    for a in answers:
        by_cell.setdefault(a["cell"], []).append(a)
    evals, out = {}, {}
    for cell, rows in by_cell.items():
        t0 = time.perf_counter()
        ev = evaluate_answers(
            [prompts[r["prompt_id"]] for r in rows],
            [r["text"] for r in rows],
            [r.get("extra", {}).get("candidate_texts") for r in rows],
            judge=judge,
        )
        for e, r in zip(ev, rows):
            e["answer_id"] = r["answer_id"]
        evals[cell] = ev
        out[cell] = summarize_scored_answers(ev)
        out[cell]["scoring_s"] = round(time.perf_counter() - t0, 2)
    for cell in by_cell:
        if cell != "plain" and "plain" in evals:
            out[cell].update(scored_deltas(evals["plain"], evals[cell]))
    (run_dir / "scored_answers.jsonl").write_text("".join(json.dumps(e) + "\n" for c in evals for e in evals[c]))
    return {"cells": out, "evals": evals}


def main(out_dir: str) -> None:
    from costtax.config import RunConfig
    from costtax.profile import profile
    from costtax.prompts.sources import SOURCES
    from costtax.rewards.refusal import RefusalJudge

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = {
        "humaneval": RunConfig(
            prompts=("humaneval",), limit=10, techniques=("plain", "bon:n=4"),
            max_tokens=SOURCES["humaneval"].default_max_tokens, out=str(out / "humaneval"),
            judge_calibration=False, eval_reward_model="none",
        ),
        "advbench": RunConfig(
            prompts=("advbench", "helpful"), limit=20, techniques=("plain", "cai:rounds=1"), max_tokens=64,
            out=str(out / "advbench"), judge_calibration=False, eval_reward_model="none",
        ),
    }
    report = {}
    judge = None
    rescore = "--rescore" in sys.argv  # score existing run directories again (e.g. a new judge)
    for name, cfg in runs.items():
        t0 = time.perf_counter()
        if rescore:
            from types import SimpleNamespace

            res = SimpleNamespace(cells_failed=())
        else:
            res = profile(cfg, on_event=lambda k, d: print(f"[{name}] {k} {d}", file=sys.stderr, flush=True))
        wall = time.perf_counter() - t0
        if name == "advbench" and judge is None:
            judge = RefusalJudge("judge")
            judge.load()
        scored = score_run(Path(cfg.out), cfg, judge)
        report[name] = {"profile_wall_s": None if rescore else round(wall, 1), "cells_failed": list(res.cells_failed)}
        if judge is not None:
            report[name]["refusal_judge"] = {"question": judge.question, "threshold": judge.threshold}
        report[name].update(scored["cells"])
        print(json.dumps(report[name], indent=1), flush=True)
    (out / ("e2e-summary-rescored.json" if rescore else "e2e-summary.json")).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "runs/public-benchmarks-e2e")
