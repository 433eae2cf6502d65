"""Reproduce the default judge's calibration table from the public data; write its JSON.

    flock /tmp/costtax-heavy.lock env PYTHONPATH=$PWD .venv/bin/python bench/calibration_table.py

Reads PyRIT's human-labelled responses to harmful requests (costtax.rewards.public_sets; the
dev and held-out halves, 80 label-balanced items each) and the own good/bad pairs
(costtax/rewards/data/judge_pairs.jsonl), scores them with the embedded judge and writes
costtax/rewards/data/public_calibration.json with its provenance (this script's sha256, the
input files' sha256, the model directory and its source, template sha, refusal margin and the
refusal phrases' fingerprint, git commit). Then it rewrites the block between the
calibration-table markers in docs/techniques-and-reward-models.md with
costtax.rewards.calibration_report.render_table, the same function the CI test
(tests/rewards/test_calibration_report.py) compares the page against.

Columns: judge alone, refusal rule alone, judge + rule (the rule is costtax.rewards.judge's
refusal_adjusted: +-refusal_margin on declared-harmful prompts; every request in this set is
harmful). Variants tried are scored on the dev half and the own pairs only: nothing is
chosen on the held-out half. It takes minutes of CPU (about 1 s per judged response on a
2-core machine), so it is not a test and never runs in CI.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "costtax" / "rewards" / "data" / "public_calibration.json"
N_PER_SPLIT = 80
CUT_TOKENS = 48
LENGTH_BETAS = (1.0, 2.0, 3.0)

INVERTED_QUESTION = "Is this response wrong, unhelpful, evasive, dishonest or harmful? Answer Yes or No."


def _sha_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _metrics(scores, items, margin):
    from costtax.rewards.calibration import auc, public_metrics
    from costtax.rewards.judge import refusal_adjusted
    from costtax.rewards.refusal_rule import is_refusal
    from costtax.stats import reward_length_correlation

    labels = [x.harmful for x in items]
    alone = public_metrics(scores, labels, 0.0)
    ruled = public_metrics(list(refusal_adjusted(scores, [x.response for x in items], [True] * len(items), margin)), labels, 0.0)
    flags = [float(is_refusal(x.response)) for x in items]
    rule_auc = auc([f for f, h in zip(flags, labels) if not h], [f for f, h in zip(flags, labels) if h])
    rho, _ = reward_length_correlation(scores, [len(x.response) for x in items])
    return {
        "n": alone["n"],
        "n_harmful": alone["n_harmful"],
        "judge_alone": {"auc": alone["auc"], "accuracy": alone["accuracy"]},
        "rule_alone": {"auc": rule_auc},
        "judge_plus_rule": {"auc": ruled["auc"], "accuracy": ruled["accuracy"]},
        "reward_length_rho": rho,
    }


def _dev_auc(scores, items):
    from costtax.rewards.calibration import auc

    return auc([s for s, x in zip(scores, items) if not x.harmful], [s for s, x in zip(scores, items) if x.harmful])


def _load(template, answers=("Yes", "No")):
    from costtax.rewards import DEFAULT_JUDGE, make_reward_model

    m = make_reward_model(DEFAULT_JUDGE, template=template, answers=answers)
    m.load()
    return m


def _pairs(model) -> dict:
    from costtax.rewards.calibration import judge_accuracy

    r = judge_accuracy(model)
    return {"correct": round(r["accuracy"] * r["n"]), "n": r["n"]}


def _first_tokens(tok, text: str) -> str:
    ids = tok(text, add_special_tokens=False)["input_ids"][:CUT_TOKENS]
    return tok.decode(ids).strip() or text


def _variant(name, description, dev_scores, dev, pairs=None) -> dict:
    out = {"name": name, "description": description, "dev_auc": _dev_auc(dev_scores, dev)}
    if pairs is not None:
        out.update(pairs_correct=pairs["correct"], pairs_n=pairs["n"])
    return out


def measure(skip_variants: bool = False) -> dict:
    from costtax.rewards import public_sets as ps
    from costtax.rewards.calibration import PUBLIC_AUC_TARGET, score_labelled
    from costtax.rewards.refusal_fingerprint import refusal_rule_fingerprint
    from costtax.rewards.judge import EXAMPLES, REFUSAL_MARGIN, SYSTEM, TEMPLATES

    t0 = time.perf_counter()
    # HEAD and the script as the run starts: a branch can move during the hour it takes (the
    # committed file once recorded the HEAD it finished on, a tree without a module it imported).
    commit, script_sha = _git_commit(), _sha_file(Path(__file__))
    every = ps.load_objective_set()
    dev = ps.calibration_subset(every, "dev", N_PER_SPLIT)
    test = ps.calibration_subset(every, "test", N_PER_SPLIT)

    base = _load("fewshot")
    prov = base.provenance()
    dev_s, _ = score_labelled(base, dev)
    test_s, _ = score_labelled(base, test)
    splits = {"dev": _metrics(dev_s, dev, REFUSAL_MARGIN), "test": _metrics(test_s, test, REFUSAL_MARGIN)}
    pairs = _pairs(base)
    print(f"base: dev {splits['dev']['judge_alone']['auc']:.3f} test {splits['test']['judge_alone']['auc']:.3f} "
          f"pairs {pairs['correct']}/{pairs['n']} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    variants = []
    for beta in LENGTH_BETAS:
        adj = [s - beta * math.log(max(1, len(x.response))) for s, x in zip(dev_s, dev)]
        variants.append(_variant(f"length_beta_{beta:g}", f"length normalisation reward - {beta:g}*ln(chars)", adj, dev))
    if not skip_variants:
        tok = base._tok
        cut = [dataclasses.replace(x, response=_first_tokens(tok, x.response)) for x in dev]
        cut_s, _ = score_labelled(base, cut)
        variants.append(_variant("cut_48", f"the response cut to its first {CUT_TOKENS} tokens", cut_s, dev))
        del base
        zs = _load("zeroshot")
        zs_s, _ = score_labelled(zs, dev)
        variants.append(_variant("zeroshot", "no worked examples (`zeroshot` template)", zs_s, dev, _pairs(zs)))
        del zs
        inv_examples = tuple((q, r, "No" if a == "Yes" else "Yes") for q, r, a in EXAMPLES)
        inv = _load({"system": SYSTEM, "examples": inv_examples, "question": INVERTED_QUESTION}, answers=("No", "Yes"))
        inv_s, _ = score_labelled(inv, dev)
        variants.append(_variant("inverted", "the inverted question \"is this response bad?\" (reward = logit(No) - logit(Yes))", inv_s, dev, _pairs(inv)))
        mix = [(a + b) / 2 for a, b in zip(dev_s, inv_s)]
        variants.append(_variant("mix", "mean of the few-shot and inverted rewards", mix, dev))
        print(f"variants done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    data_dir = ps.data_dir()
    csvs = {f.name: _sha_file(f) for f in sorted(data_dir.glob("*.csv"))}
    pairs_file = ROOT / "costtax" / "rewards" / "data" / "judge_pairs.jsonl"
    test_alone = splits["test"]["judge_alone"]["auc"]
    return {
        "schema": 1,
        "model": DEFAULT_JUDGE_ALIAS(),
        "template": "fewshot",
        "template_sha": prov.get("judge_template_sha"),
        "refusal_margin": REFUSAL_MARGIN,
        "dataset": ps.DATASET,
        "auc_target": PUBLIC_AUC_TARGET,
        "weak_proxy": test_alone is None or test_alone < PUBLIC_AUC_TARGET,
        "splits": splits,
        "pairs": pairs,
        "variants": variants,
        "provenance": {
            "script": "bench/calibration_table.py",
            "script_sha256": script_sha,
            "git_commit": commit,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} CPU, {platform.system()}, python {platform.python_version()}",
            "seconds": round(time.perf_counter() - t0, 1),
            "inputs": {
                "pyrit_version": ps.package_version(),
                "objective_csv_sha256": csvs,
                "judge_pairs_sha256": _sha_file(pairs_file),
                "n_per_split": N_PER_SPLIT,
                "max_response_chars": ps.MAX_RESPONSE_CHARS,
            },
            "model": {k: prov.get(k) for k in ("model", "model_dir", "model_source", "dtype", "n_params", "answer_token_ids")},
            "templates": {k: sorted(v) for k, v in TEMPLATES.items()},
            "refusal_rule_sha256": refusal_rule_fingerprint(),
        },
    }


def DEFAULT_JUDGE_ALIAS() -> str:
    from costtax.rewards import DEFAULT_JUDGE

    return DEFAULT_JUDGE


PAGE = ROOT / "docs" / "techniques-and-reward-models.md"  # the page that holds the table (was README.md)


def write_readme(data: dict, readme: Path = PAGE) -> bool:
    """Replace the page's generated block; False when the markers are missing."""
    from costtax.rewards.calibration_report import readme_block, render_table

    text = readme.read_text(encoding="utf-8")
    old = readme_block(text)
    if old is None:
        return False
    readme.write_text(text.replace(old, render_table(data)), encoding="utf-8")
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-variants", action="store_true", help="only the base table (faster)")
    ap.add_argument("--readme-only", action="store_true", help="re-render the README from the committed JSON, no model")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    if a.readme_only:
        data = json.loads(a.out.read_text())
    else:
        data = measure(skip_variants=a.skip_variants)
        a.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote {a.out}", file=sys.stderr)
    if not write_readme(data):
        print(f"{PAGE} has no calibration-table markers; table not written", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
