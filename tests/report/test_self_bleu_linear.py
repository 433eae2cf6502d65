"""The linear self-BLEU (report/diversity.py) gives sacrebleu's floats exactly: equality with the
definition, mean over i of sentence_bleu(text_i, all other texts), on random and real answer sets."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit

sacrebleu = pytest.importorskip("sacrebleu")

from costtax.report import diversity  # noqa: E402
from costtax.report.diversity import _closest_other_lengths, self_bleu, self_bleu_groups  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["one key", "two keys"], autouse=True)
def keys(request, monkeypatch):
    """Every set through both n-gram sorts: ids packed into one key (small vocabularies) and
    the two-key sort (large ones)."""
    monkeypatch.setattr(diversity, "PACK_BITS", 64 if request.param == "one key" else 0)
    return request.param


def reference(texts: list[str]) -> float | None:
    """The definition, quadratic: what self_bleu computed before it was linear."""
    kept = [t for t in texts if t is not None and t.strip()]
    if len(kept) < 2:
        return None
    return float(np.mean([sacrebleu.sentence_bleu(h, kept[:i] + kept[i + 1:]).score for i, h in enumerate(kept)]))


def random_set(rng: random.Random) -> list[str]:
    """Small vocabularies so n-grams repeat within and across texts, lengths that tie, duplicate
    texts, punctuation the 13a tokeniser splits off, and the odd empty text."""
    vocab = [f"w{i}" for i in range(rng.choice([2, 3, 5, 12, 40]))] + [".", ",", "it's", "&amp;", "a-\nb"]
    out = []
    for _ in range(rng.randint(2, 20)):
        r = rng.random()
        if r < 0.1 and out:
            out.append(rng.choice(out))  # an exact duplicate
        elif r < 0.13:
            out.append(rng.choice(["", "  ", "x"]))
        else:
            out.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 25))))
    return out


def test_equals_sentence_bleu_on_300_random_sets():
    rng = random.Random(20261206)
    mismatches = [s for s in (random_set(rng) for _ in range(300)) if self_bleu(s) != reference(s)]
    assert not mismatches, f"{len(mismatches)} sets differ, first: {mismatches[0]!r}"


def test_groups_in_one_pass_equal_each_group_alone():
    """self_bleu_groups (BoN candidate sets, --repeats groups): each text against its own group
    only, the same floats as sentence_bleu per group; groups of < 2 texts give None."""
    rng = random.Random(5)
    # the last n-gram of one group sorts next to the same n-gram first in the next group
    sets = [["a", "a"], ["a", "b"], ["a b", "a b"], ["a b", "c d"]]
    assert self_bleu_groups(sets) == [reference(s) for s in sets]
    sets = [random_set(rng) for _ in range(120)] + [["only one"], [], ["", "x"]]
    rng.shuffle(sets)
    assert self_bleu_groups(sets) == [reference(s) for s in sets]


def _answer_texts(path: Path) -> dict[tuple, list[str]]:
    groups: dict[tuple, list[str]] = {}
    for line in path.read_text().splitlines():
        a = json.loads(line)
        if isinstance(a.get("text"), str):
            groups.setdefault((a.get("cell"), a.get("load")), []).append(a["text"])
    return groups


REAL = sorted(p.relative_to(ROOT) for d in ("bench/results", "tests/golden") for p in (ROOT / d).rglob("answers.jsonl"))


@pytest.mark.parametrize("run", REAL, ids=str)
def test_equals_sentence_bleu_on_committed_answers(run):
    groups = _answer_texts(ROOT / run)
    assert groups
    for key, texts in groups.items():
        assert self_bleu(texts) == reference(texts), key
    every = [t for ts in groups.values() for t in ts][:100]  # sacrebleu's side is quadratic
    assert self_bleu(every) == reference(every)


def test_equals_sentence_bleu_on_public_responses():
    """PyRIT's human-written responses (read in place from the pyrit wheel), long multi-line texts."""
    from costtax.rewards.public_sets import load_objective_set

    try:
        items = load_objective_set()
    except Exception as exc:  # the wheel is installed by scripts/setup_env.sh
        pytest.fail(f"pyrit's scorer-eval set is not readable: {exc}")
    by_cat: dict[str, list[str]] = {}
    for it in items:  # 12 per category keeps sacrebleu's quadratic side quick
        if len(by_cat.setdefault(it.category, [])) < 12:
            by_cat[it.category].append(it.response)
    for cat, texts in by_cat.items():
        assert self_bleu(texts) == reference(texts), cat


def test_closest_other_length_stays_in_its_group():
    lens = np.array([3, 5, 4, 100, 2, 2])
    group = np.array([0, 0, 1, 1, 2, 2])
    assert _closest_other_lengths(lens, group).tolist() == [5, 3, 100, 4, 2, 2]


def test_closest_other_length_ties_to_the_shorter():
    lens = np.array([3, 5, 7, 7, 10, 1])
    # 3: others 5,7,7,10,1 -> 1 and 5 both 2 away -> 1; 5: 3 and 7 -> 3; 7: another 7
    assert _closest_other_lengths(lens).tolist() == [1, 3, 7, 7, 7, 3]
    m = sacrebleu.metrics.bleu.BLEU()
    for i, h in enumerate(lens.tolist()):
        assert _closest_other_lengths(lens)[i] == m._get_closest_ref_len(h, lens.tolist()[:i] + lens.tolist()[i + 1:])
