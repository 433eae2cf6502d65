"""costtax's own cost at the scale of a capacity run (issue 28): synthetic run directories of N
answers, timed through `RunData.open`, `costtax report`, `costtax plan` and `costtax compare`,
each step in its own subprocess so its wall time and peak memory (ru_maxrss) are its own.

    PYTHONPATH=$PWD .venv/bin/python bench/scale_rundirs.py --answers 1000 10000 100000 \\
        --out bench/results/scale-cpu-YYYY-MM-DD.json

A run directory here: run.json from the committed golden run (tests/golden/new), three cells
(plain, bon:n=4, cai:rounds=2) at one load level (concurrency=64), N answers split evenly, about
four calls per answer (11 per three answers: plain: sample + eval; bon: one sample call of n=4 +
score + eval; cai: sample + two critique/revise rounds + eval), the prompts of the helpful, arith and harmful sources cycled
(--repeats as needed, so the per-prompt columns see groups), scores.jsonl for the harmful ones.
`compare` compares the run with a copy of itself (same size on both sides; its CIs re-read both).
Texts: Zipf-distributed words of a fixed vocabulary (the words of the prompt sets plus
generated ones) in sentences, 20-200 words, a seeded generator: the same N gives the same
bytes. Timestamps are a closed loop of 64 answers of ~1.3 s each.

The 100k case takes minutes and gigabytes: it is this script's, not CI's (bench/
test_bench_scale.py runs a small directory through the same steps in `pytest bench`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "tests" / "golden" / "new"
CELLS = (("plain", "plain", {}), ("bon:n=4", "bon", {"n": 4, "share_prefix": True}),
         ("cai:rounds=2", "cai", {"rounds": 2, "early_stop": False}))
_GOLDEN_CELL = {"plain": "plain", "bon:n=4": "bon:n=2", "cai:rounds=2": "cai:rounds=1"}  # the template's records
LEVEL = "concurrency=64"
SOURCES = ("helpful", "arith", "harmful")


def _vocabulary(rng: random.Random) -> list[str]:
    from costtax.prompts import select_prompts

    prompts, _ = select_prompts(list(SOURCES), limit=None, seed=0)
    words = dict.fromkeys(w.strip(".,;:!?\"'()").lower() for p in prompts for w in str(p.text).split())
    words.pop("", None)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    while len(words) < 8000:
        words.setdefault("".join(rng.choice(letters[: rng.randint(8, 26)]) for _ in range(rng.randint(2, 10))), None)
    return list(words)


class _Texts:
    """Answers: sentences of Zipf-distributed words (s = 1.1), 20-200 words."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.vocab = _vocabulary(rng)
        weights = [1.0 / (k + 1) ** 1.1 for k in range(len(self.vocab))]
        total = sum(weights)
        acc, self.cum = 0.0, []
        for w in weights:
            acc += w / total
            self.cum.append(acc)

    def text(self, words: int | None = None) -> str:
        rng = self.rng
        n = words or int(min(200, max(20, rng.lognormvariate(math.log(70), 0.5))))
        toks = rng.choices(self.vocab, cum_weights=self.cum, k=n)
        out, since = [], 0
        for t in toks:
            out.append(t)
            since += 1
            if since > 6 and rng.random() < 0.08:
                out[-1] += "."
                since = 0
        s = " ".join(out)
        return s[0].upper() + s[1:] + "."


def _template(name: str) -> dict[str, dict]:
    """The golden run's first record of each cell (the field set costtax writes)."""
    out: dict[str, dict] = {}
    for line in (TEMPLATE / name).read_text().splitlines():
        r = json.loads(line)
        key = r["cell"] if name != "calls.jsonl" else (r["cell"], r["stage"])
        out.setdefault(key, r)
    return out


def make_run(path: Path, n_answers: int, seed: int = 0) -> Path:
    """A synthetic run directory of `n_answers` answers (module docstring)."""
    from costtax.prompts import select_prompts

    rng = random.Random(seed)
    texts = _Texts(rng)
    prompts, _ = select_prompts(list(SOURCES), limit=None, seed=0)
    per_cell = max(1, n_answers // len(CELLS))
    repeats = max(1, math.ceil(per_cell / len(prompts)))
    path.mkdir(parents=True, exist_ok=True)
    meta = json.loads((TEMPLATE / "run.json").read_text())
    run_id = f"scale-{n_answers}-{seed}"
    counts = {s: sum(1 for p in prompts if p.source == s) for s in SOURCES}
    meta.update(run_id=run_id, cells=[c for c, _, _ in CELLS], load_levels=[LEVEL], cell_repeats=1, events=[],
                prompts={"count": len(prompts), "sets": sorted(SOURCES),
                         "sources": [{"source": s, "used": counts[s], "available": counts[s]} for s in SOURCES]})
    meta["config"].update(techniques=[c for c, _, _ in CELLS], cells=[c for c, _, _ in CELLS], load=[LEVEL], cell_repeats=1,
                          repeats=repeats, limit=None, out=str(path), max_tokens=256, slo_p95_s=5.0)
    (path / "run.json").write_text(json.dumps(meta, indent=2))
    ta, tc, tu = _template("answers.jsonl"), _template("calls.jsonl"), _template("cells.jsonl")
    ts = json.loads((TEMPLATE / "scores.jsonl").read_text().splitlines()[0])
    t = 0.0
    with open(path / "answers.jsonl", "w") as fa, open(path / "calls.jsonl", "w") as fc, \
            open(path / "cells.jsonl", "w") as fu, open(path / "scores.jsonl", "w") as fs:
        for cell, tech, params in CELLS:
            t_start = t + 1.0
            call_no = 0
            slots = [t_start] * 64  # closed loop: each slot starts its next answer when one ends
            for i in range(per_cell):
                p = prompts[i % len(prompts)]
                rep = i // len(prompts)
                aid = f"{cell}|{p.id}|{rep}"
                k = min(range(64), key=slots.__getitem__)
                t0 = slots[k]
                right = p.answer is not None and rng.random() < 0.4
                text = (f"The answer is {p.answer}. " if right else "") + texts.text()
                out_tok = len(text.split())
                stages: list[tuple[str, int, float]] = [("sample", 1, 0.3 + out_tok * 0.015)]
                if tech == "bon":
                    stages = [("sample", 4, 0.4 + out_tok * 0.016), ("score", 4, 0.08)]
                elif tech == "cai":
                    stages = stages + [("critique", 1, 0.6), ("revise", 1, 0.3 + out_tok * 0.015)] * 2
                tt = t0
                cand = [texts.text() for _ in range(3)] + [text] if tech == "bon" else None
                for stage, n, dur in stages:
                    call_no += 1
                    c = dict(tc[(_GOLDEN_CELL[cell], stage)])
                    dur *= rng.uniform(0.8, 1.3)
                    c.update(run_id=run_id, cell=cell, call_id=f"{cell}|c{call_no}", answer_id=aid, prompt_id=p.id,
                             n=n, prompt_tokens=60 + (out_tok if stage != "sample" else 0), output_tokens=0 if stage == "score" else out_tok,
                             t_submit_s=tt, t_finish_s=tt + dur, latency_s=dur, repeat=rep, load=LEVEL, cell_repeat=0,
                             answer_ids=[aid], prompt_tokens_computed=None if stage == "score" else 60)
                    if stage != "score":
                        c.update(t_first_token_s=tt + 0.05, ttft_s=0.05)
                    else:
                        c["extra"] = {**c["extra"], "rewards": [round(rng.random(), 3) for _ in range(4)]}
                    fc.write(json.dumps(c) + "\n")
                    tt += dur
                a = dict(ta[_GOLDEN_CELL[cell]])
                a.update(run_id=run_id, cell=cell, answer_id=aid, technique=tech, prompt_id=p.id, text=text, calls=len(stages),
                         prompt_tokens=60, output_tokens=out_tok, latency_s=tt - t0, prompt_set=p.source, repeat=rep,
                         ttft_s=0.05, load=LEVEL, cell_repeat=0, t_arrival_s=t0, t_finish_s=tt,
                         selection_reward=round(rng.random(), 3) if tech == "bon" else None)
                if tech == "bon":
                    a["extra"] = {"selected_index": 3, "candidate_rewards": [round(rng.random(), 3) for _ in range(4)],
                                  "candidate_zscores": [0.0] * 4, "candidate_output_tokens": [len(x.split()) for x in cand],
                                  "candidate_texts": cand}
                if tech == "cai":
                    a["extra"] = {**(a.get("extra") or {}), "rounds": 2, "principles": ["harmless-2", "helpful-1"],
                                  "revisions_changed": [True, rng.random() < 0.5], "critiques": [texts.text(15), texts.text(15)],
                                  "initial_text": texts.text(), "conversation_turns": 10}
                fa.write(json.dumps(a) + "\n")
                # the evaluation call, after the answer
                call_no += 1
                e = dict(tc[(_GOLDEN_CELL[cell], "eval")])
                e.update(run_id=run_id, cell=cell, call_id=f"{cell}|c{call_no}", answer_id=aid, prompt_id=p.id, repeat=rep,
                         load=LEVEL, cell_repeat=0, t_submit_s=tt, t_finish_s=tt + 0.02, latency_s=0.02, answer_ids=[aid])
                fc.write(json.dumps(e) + "\n")
                if p.source == "harmful":
                    fs.write(json.dumps({**ts, "run_id": run_id, "cell": cell, "load": LEVEL, "cell_repeat": 0, "answer_id": aid,
                                         "prompt_id": p.id, "refusal_rule": rng.random() < 0.5}) + "\n")
                slots[k] = tt
            t_end = max(slots)
            u = dict(tu[_GOLDEN_CELL[cell]])
            u.update(run_id=run_id, cell=cell, technique=tech, params=params, answers=per_cell, cell_wall_s=t_end - t_start,
                     t_start_s=t_start, t_end_s=t_end, load=LEVEL, cell_repeat=0, resumed_answers=0, score_batches=[])
            u["meter"] = {**u["meter"], "wall_s": t_end - t_start, "cpu_s": 0.4 * (t_end - t_start)}
            u["load_stats"] = {**u["load_stats"], "load_mode": "concurrency", "load_level": 64, "started": per_cell,
                               "finished": per_cell, "achieved_answers_per_s": per_cell / (t_end - t_start),
                               "load_span_s": t_end - t_start}
            fu.write(json.dumps(u) + "\n")
            t = t_end
    return path


# --------------------------------------------------------------------------- timing

_STEPS = {
    "open": [sys.executable, "-c", "import sys; from costtax.store.rundata import RunData; rd = RunData.open(sys.argv[1]); "
             "print(len(rd.answers), len(rd.calls))", "{run}"],
    "report": [sys.executable, "-m", "costtax", "report", "{run}", "--wide"],
    "plan": [sys.executable, "-m", "costtax", "plan", "{run}", "--qps", "100", "--slo-p95-s", "5", "--wide"],
    "compare": [sys.executable, "-m", "costtax", "compare", "{old}", "{run}", "--wide"],
}


def time_step(argv: list[str], timeout_s: float) -> dict:
    """Wall time, CPU time and peak RSS of one subprocess (os.wait4: its own rusage)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    deadline = t0 + timeout_s
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    rc = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),
            "rc": rc, **({"stderr_tail": err[-400:]} if rc not in (0, 1) else {})}


def _load() -> dict:
    la = os.getloadavg()
    return {"loadavg_1_5_15": [round(x, 2) for x in la], "cpu_count": os.cpu_count()}


def bench(sizes: list[int], work: Path, timeout_s: float = 1800) -> dict:
    import platform

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": commit,
           "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpu_count": os.cpu_count(), "python": platform.python_version()},
           "layout": {"cells": [c for c, _, _ in CELLS], "load": LEVEL, "calls_per_answer": 11 / 3}, "sizes": []}
    for n in sizes:
        t = time.perf_counter()
        run = make_run(work / f"n{n}", n, seed=0)
        old = work / f"n{n}-old"  # compare's baseline: a copy of the run once report wrote its summary
        made = time.perf_counter() - t
        row = {"answers": n, "generate_s": round(made, 1), "files_mb": round(sum(f.stat().st_size for f in run.iterdir()) / 1e6, 1),
               "load_before": _load(), "steps": {}}
        for name, argv in _STEPS.items():
            if name == "compare":
                import shutil

                shutil.rmtree(old, ignore_errors=True)
                shutil.copytree(run, old)
            args = [a.format(run=run, old=old) for a in argv]
            row["steps"][name] = time_step(args, timeout_s)
            print(f"{n} answers: {name} {row['steps'][name]}", file=sys.stderr, flush=True)
        row["load_after"] = _load()
        out["sizes"].append(row)
    rep = {r["answers"]: r["steps"]["report"]["wall_s"] for r in out["sizes"]}
    if 10_000 in rep and 100_000 in rep:
        out["report_growth_10k_to_100k"] = round(rep[100_000] / rep[10_000], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--work", default="/tmp/costtax-scale", help="where the run directories are written")
    ap.add_argument("--out", help="write the results JSON here")
    ap.add_argument("--note", default="", help="what else ran on the machine (load)")
    ns = ap.parse_args(argv)
    res = bench(ns.answers, Path(ns.work))
    res["note"] = ns.note
    text = json.dumps(res, indent=2)
    if ns.out:
        Path(ns.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
