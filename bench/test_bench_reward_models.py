"""Reward models through the costtax plugin's session scorer: time one batched score() over the
shipped good/bad pairs (benchmark.pedantic, fixed rounds) and record the pairs accuracy, the
tokens read and the kernel path in extra_info, so a regression in speed or in discrimination
shows in `costtax compare`.

- judge: the session's reward model (default: the few-shot SmolLM2 judge), the one best-of-N
  selects with and evaluates with in bench/test_bench_techniques.py.
- scalar: a tiny random LlamaForSequenceClassification built locally (no weights downloaded):
  times the scalar-head path; its accuracy is chance by construction and is not asserted.
"""
from __future__ import annotations

import pytest

from costtax.compare.verdicts import Estimate
from costtax.rewards.calibration import judge_accuracy, load_judge_pairs

ROUNDS, WARMUP = 3, 1
N_PAIRS = 8  # 16 responses per score() call: a best-of-4 cell of 4 prompts scores 16 candidates


def _pairs():
    return load_judge_pairs()[:N_PAIRS]


def _record(benchmark, name: str, res: dict) -> None:
    import math

    n, acc = res["n"], res["accuracy"]
    half = 1.96 * math.sqrt(acc * (1 - acc) / n) if n else None  # normal-approx CI, n=8: wide
    benchmark.extra_info.update({
        "reward_model": name, "pairs": n, "pairs_accuracy": acc, "margin_mean": res["margin_mean"],
        "tokens": res["tokens"], "kernel_path": res["path"],
        "costtax": {"cell": f"reward:{name}", "metrics": {
            "pairs_accuracy": Estimate(acc, max(0.0, acc - half), min(1.0, acc + half), n).to_json(),
        }},
    })


def test_judge_score(costtax_scorer, benchmark):
    benchmark.group = "reward-model"
    res = benchmark.pedantic(lambda: judge_accuracy(costtax_scorer, _pairs()), rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    _record(benchmark, getattr(costtax_scorer, "name", "judge"), res)
    assert res["n"] == N_PAIRS and res["tokens"] > 0
    # The judge must stay better than chance on these pairs (4/5 measured on hand-made pairs,
    # see /work/shared/README.md); 0.5 would be a coin.
    assert res["accuracy"] >= 0.5, res


@pytest.fixture(scope="module")
def scalar_rm(tmp_path_factory):
    from costtax.rewards import make_reward_model
    from costtax.tiny import build_tiny_llama

    d = build_tiny_llama(tmp_path_factory.mktemp("tiny-rm"), classifier=True)
    rm = make_reward_model(f"scalar:{d}")
    rm.load()
    yield rm
    rm.close()


def test_scalar_score(scalar_rm, benchmark):
    benchmark.group = "reward-model"
    res = benchmark.pedantic(lambda: judge_accuracy(scalar_rm, _pairs()), rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    _record(benchmark, "scalar-tiny-random", res)
    assert res["n"] == N_PAIRS and res["tokens"] > 0
