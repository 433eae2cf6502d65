"""Quality columns of summary.csv for one row's answers: reward (selection and evaluation, with
CIs), accuracy against the reference answers the run recorded, refusal rate on prompts whose
source scores refusals, output narrowing (distinct-n, self-BLEU over answers, BoN candidates and
--repeats), truncation, reward-vs-length correlation, and the technique's own columns."""
from __future__ import annotations

from typing import Any

from .. import stats as M
from ..prompts.exact_match import is_correct
from ..rewards.refusal_rule import is_refusal
from .diversity import distinct_n, self_bleu, self_bleu_groups

def _column(answers, key):
    return list(answers[key]) if key in answers else []


def cell_quality(a, prompts_answer: dict[str, str | None], prompt_scorers: dict[str, str]) -> dict[str, Any]:
    """Quality columns of one row's answers `a` (a DataFrame of RunData answers)."""
    texts = list(a["text"])
    out: dict[str, Any] = {}
    sel = [x for x in a.get("selection_reward", []) if x is not None]
    out["selection_reward_mean"] = M.mean_or_none(sel)
    ev = [x for x in a["eval_reward"] if x is not None and x == x] if "eval_reward" in a else []
    out["eval_reward_mean"] = M.mean_or_none(ev)
    ci = M.bootstrap_ci(ev) if ev else None
    out["eval_reward_ci95_lo"], out["eval_reward_ci95_hi"] = ci if ci else (None, None)
    out["eval_reward_n"] = len(ev)
    # accuracy on prompts with an answer (the arith set)
    graded = [(t, prompts_answer.get(pid)) for t, pid in zip(texts, a["prompt_id"]) if prompts_answer.get(pid) is not None]
    correct = [is_correct(t, ans) for t, ans in graded]
    out["accuracy"] = (sum(correct) / len(correct)) if correct else None
    out["accuracy_n"] = len(correct)
    ci = M.bootstrap_ci([float(c) for c in correct]) if correct else None
    out["accuracy_ci95_lo"], out["accuracy_ci95_hi"] = ci if ci else (None, None)
    # refusal rate on the prompts whose source scores refusals (SourceSpec.scorer, per prompt);
    # the column keeps its first name
    harm = [t for t, pid in zip(texts, a["prompt_id"]) if prompt_scorers.get(pid) == "refusal"]
    out["refusal_rate_harmful"] = (sum(is_refusal(t) for t in harm) / len(harm)) if harm else None
    out["refusal_n"] = len(harm)
    # output narrowing across the cell's final answers
    out["distinct_1"] = distinct_n(texts, 1)
    out["distinct_2"] = distinct_n(texts, 2)
    out["self_bleu"] = _bleu(texts)
    # over BoN's N candidates (mean over prompts)
    cands = [c for c in _column(a, "candidate_texts") if c]
    if cands:
        out["candidate_distinct_2"] = M.mean_or_none([distinct_n(c, 2) for c in cands])
        out["candidate_self_bleu"] = M.mean_or_none(_bleu(cands, groups=True))
    else:
        out["candidate_distinct_2"] = out["candidate_self_bleu"] = None
    # over --repeats K final answers per prompt (null when K=1)
    if "repeat" in a and a["repeat"].nunique() > 1:
        groups = a.groupby("prompt_id")["text"].apply(list)
        out["repeats_self_bleu"] = M.mean_or_none(_bleu(list(groups), groups=True))
        out["repeats_distinct_2"] = M.mean_or_none([distinct_n(g, 2) for g in groups])
    else:
        out["repeats_self_bleu"] = out["repeats_distinct_2"] = None
    out["truncated_rate"] = float(a["truncated"].mean()) if "truncated" in a and len(a) else None
    # Reward over-optimisation's classic direction: reward growing with length. Final answers'
    # evaluation reward vs their length in words; BoN candidates' selection rewards vs theirs.
    ev_pairs = [(r, len(str(t).split())) for r, t in zip(a["eval_reward"], texts) if r is not None and r == r] if "eval_reward" in a else []
    rho, n = M.reward_length_correlation([r for r, _ in ev_pairs], [w for _, w in ev_pairs])
    out["reward_length_rho"], out["reward_length_n"] = rho, n
    out["reward_length_strong"] = M.reward_length_strong(rho, n)
    cand_r, cand_w = [], []
    for rewards, ctexts in zip(_column(a, "candidate_rewards"), _column(a, "candidate_texts")):
        if rewards and ctexts and len(rewards) == len(ctexts):
            cand_r.extend(rewards)
            cand_w.extend(len(str(t).split()) for t in ctexts)
    crho, cn = M.reward_length_correlation(cand_r, cand_w) if cand_r else (None, 0)
    out["candidate_reward_length_rho"] = crho
    out["candidate_reward_length_strong"] = M.reward_length_strong(crho, cn)
    return out


def _bleu(texts, groups: bool = False):
    """self-BLEU (of each group with groups=True), or None with a warning where sacrebleu is not
    installed (a bare GPU image)."""
    try:
        return self_bleu_groups(texts) if groups else self_bleu(texts)
    except ImportError as exc:
        import warnings

        warnings.warn(f"self_bleu columns are null: {exc}", RuntimeWarning)
        return [] if groups else None




def technique_summary(cr: dict, a, prompts_answer) -> dict[str, Any]:
    """The technique's own summary columns, declared in its file."""
    from ..config import TechniqueSpec

    if not len(a):
        return {}
    try:
        params = cr.get("params") or {}
        tech = TechniqueSpec(cr["technique"], tuple(params.items())).build()
    except Exception:  # a technique no longer registered: its own columns are left out
        return {}
    return tech.summary(a.to_dict("records"), prompts_answer)


