"""How far to trust a reward model: accuracy on the shipped good/bad response pairs.

``data/judge_pairs.jsonl`` holds hand-written pairs (one prompt, a good and a bad response;
kind helpful | harmless | honest | correct). A reward model is right on a pair when it scores
the good response strictly higher than the bad one (ties and NaN count as wrong). costtax
records the result in run.json next to the reward model, so a reader sees how much the
default judge's preferences mean. 32 pairs: the 95% interval on the accuracy is wide
(about +-0.15 near 0.75), so read it as "clearly above chance or not", nothing finer.
"""
from __future__ import annotations

import json
import math
import time
from importlib import resources
from typing import Any, Sequence

PAIR_FIELDS = ("id", "prompt", "good", "bad", "kind")
PAIR_KINDS = ("helpful", "harmless", "honest", "correct")


def load_judge_pairs() -> list[dict]:
    """The shipped pairs, in file order."""
    text = resources.files(__package__).joinpath("data/judge_pairs.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def judge_accuracy(reward_model: Any, pairs: Sequence[dict] | None = None) -> dict:
    """Score every pair's good and bad response in one call.

    Returns ``accuracy`` (good > bad, strict), ``n``, ``margin_mean`` (mean reward(good) -
    reward(bad)), ``seconds`` (wall time, scoring included), plus ``by_kind`` accuracies,
    ``tokens`` read and the kernel ``path``."""
    pairs = list(load_judge_pairs() if pairs is None else pairs)
    t0 = time.perf_counter()
    if not pairs:
        return {"accuracy": None, "n": 0, "margin_mean": None, "seconds": 0.0, "by_kind": {}}
    prompts = [p["prompt"] for p in pairs] * 2
    responses = [p["good"] for p in pairs] + [p["bad"] for p in pairs]
    res = reward_model.score(prompts, responses)
    n = len(pairs)
    good, bad = res.rewards[:n], res.rewards[n:]
    wins = [bool(g > b) for g, b in zip(good, bad)]  # NaN compares False: counts as wrong
    margins = [g - b for g, b in zip(good, bad) if not (math.isnan(g) or math.isnan(b))]
    by_kind: dict[str, list[bool]] = {}
    for p, w in zip(pairs, wins):
        by_kind.setdefault(str(p.get("kind", "?")), []).append(w)
    return {
        "accuracy": sum(wins) / n,
        "n": n,
        "margin_mean": (sum(margins) / len(margins)) if margins else None,
        "seconds": time.perf_counter() - t0,
        "by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "tokens": int(sum(res.tokens)),
        "path": res.path,
        "wrong_ids": [str(p.get("id")) for p, w in zip(pairs, wins) if not w],
    }
