"""Agreement of costtax's two refusal scorers with human labels, on public sets loaded offline.

Sets (all from the pyrit==1.1.0 wheel, pyrit/datasets/scorer_evals/, human-labelled, 1 = refusal):
* measure: refusal_scorer/refusal_extra.csv + sample/mini_refusal.csv, minus every response that
  also appears in refusal_scorer/refusal.csv (deduplicated): the set the soft phrases were
  chosen on, and the one this issue asks to report;
* heldout: refusal_scorer/refusal.csv (70 refusals, 35 non-refusals): kept aside, scored once
  for this report, not used to choose phrases or thresholds;
* complied: objective/*.csv rows with human_score 1 ("objective achieved", so not a refusal):
  a false-positive check for the phrase rule on answers that comply, often with caveats;
* helpful (optional, --answers RUN/answers.jsonl): a model's answers to the shipped helpful set,
  the false-positive check the issue asks for (no human labels: every one should be a non-refusal
  unless read and found otherwise).

Run: PYTHONPATH=. HF_HUB_OFFLINE=1 python bench/results/refusal-agreement.py [--no-judge]
     [--answers RUN/answers.jsonl] [--out bench/results/refusal-agreement-DATE]
"""
from __future__ import annotations

import argparse
import csv
import glob
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import date

from costtax.rewards.refusal_rule import is_refusal
from costtax.stats import refusal_agreement


def _csv(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def load_sets(base: str) -> dict[str, list[tuple[str, str, bool]]]:
    held = _csv(os.path.join(base, "refusal_scorer/refusal.csv"))
    held_texts = {r["assistant_response"] for r in held}
    seen, measure = set(), []
    for r in _csv(os.path.join(base, "refusal_scorer/refusal_extra.csv")) + _csv(os.path.join(base, "sample/mini_refusal.csv")):
        t = r.get("assistant_response")
        if not t or t in held_texts or t in seen or r.get("human_score") not in ("0", "1"):
            continue
        seen.add(t)
        measure.append((r["objective"], t, r["human_score"] == "1"))
    complied = [
        (r["objective"], r["assistant_response"], False)
        for f in sorted(glob.glob(os.path.join(base, "objective", "*.csv")))
        for r in _csv(f)
        if r.get("human_score") == "1"
    ]
    return {
        "measure": measure,
        "heldout": [(r["objective"], r["assistant_response"], r["human_score"] == "1") for r in held],
        "complied": complied,
    }


def auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def best_threshold(scores, labels):
    cands = sorted(set(scores))
    cuts = [c - 1e-6 for c in cands] + [cands[-1] + 1e-6]
    return max(cuts, key=lambda t: (sum((s > t) == y for s, y in zip(scores, labels)), -abs(t)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-judge", action="store_true")
    ap.add_argument("--judge", default="judge", help="reward-model spec of the judge")
    ap.add_argument("--question", default="comply", help="refusal judge question: comply | refuse")
    ap.add_argument("--answers", help="answers.jsonl of a run over the helpful set (FP check)")
    ap.add_argument("--out", default=f"bench/results/refusal-agreement-{date.today().isoformat()}")
    args = ap.parse_args()

    base = os.path.join(importlib.util.find_spec("pyrit").submodule_search_locations[0], "datasets", "scorer_evals")
    sets = load_sets(base)
    if args.answers:
        rows = [json.loads(l) for l in open(args.answers, encoding="utf-8") if l.strip()]
        sets["helpful"] = [("", r["text"], False) for r in rows if r.get("prompt_set") == "helpful"]
    res: dict = {"sets": {k: {"n": len(v), "refusals": sum(y for _, _, y in v)} for k, v in sets.items()}}
    for name, rows in sets.items():
        labels = [y for _, _, y in rows]
        res[name] = {
            "rule_before": refusal_agreement([is_refusal(t, soft=False) for _, t, _ in rows], labels),
            "rule": refusal_agreement([is_refusal(t) for _, t, _ in rows], labels),
        }
    if not args.no_judge:
        from costtax.rewards.refusal import RefusalJudge

        judge = RefusalJudge(args.judge, question=args.question)
        load_s = judge.load()
        res["judge_provenance"] = {k: v for k, v in judge.provenance().items() if k != "stats"}
        res["judge_provenance"]["load_s"] = load_s
        scores = {}
        for name in ("measure", "heldout"):
            rows = sets[name]
            t0 = time.perf_counter()
            scores[name] = judge.scores([p for p, _, _ in rows], [t for _, t, _ in rows])
            labels = [y for _, _, y in rows]
            rule = [is_refusal(t) for _, t, _ in rows]
            jv = [s > judge.threshold for s in scores[name]]
            res[name].update(
                judge=refusal_agreement(jv, labels),
                judge_auroc=auroc(scores[name], labels),
                rule_vs_judge_disagreement=sum(a != b for a, b in zip(rule, jv)) / len(rows),
                judge_seconds=time.perf_counter() - t0,
                judge_scores=[round(s, 4) for s in scores[name]],
            )
        # a threshold chosen on `measure` (most accurate cut), applied unchanged to `heldout`
        thr = best_threshold(scores["measure"], [y for _, _, y in sets["measure"]])
        res["judge_threshold_from_measure"] = thr
        for name in ("measure", "heldout"):
            res[name]["judge_at_measure_threshold"] = refusal_agreement(
                [s > thr for s in scores[name]], [y for _, _, y in sets[name]]
            )
        judge.close()
    res["conditions"] = {
        "date": date.today().isoformat(), "python": sys.version.split()[0], "machine": platform.machine(),
        "note": "CPU only, 2 cores shared with other engineers: timings are under contention",
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as fh:
        json.dump(res, fh, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k not in ("judge_provenance",)}, indent=1, default=str)[:6000])


if __name__ == "__main__":
    main()
