"""Invariants between independent counters, checked on every summary row (after the stage
columns, which they read). Each check raises a `flag_*` column, appended to the row's
`sanity_flags`, so a violation shows in the table's warnings, never silently.

- **reward tokens** (`flag_reward_computed_exceeds_read`): a score call's reward model cannot
  compute more tokens than it read (`reward_tokens_computed <= prompt_tokens`).
  `flag_score_tokens_mismatch`: the stage table's `stage_score_tokens_per_answer` (stages.py)
  must equal `reward_tokens_computed_per_answer` (cost.py) where the reward model reports what
  it computed: two code paths over the same calls (the waste-ratio bug of issue 25 was the stage
  path silently falling back to tokens *read*).
- **prefill** (`flag_prefill_exceeds_prompt`): a generation call cannot prefill more than its
  prompt once per sample, `prompt_tokens_computed <= prompt_tokens x n`, plus one more prompt
  when n > 1: vLLM V1 turns SamplingParams(n>1) into a `max_tokens=1` prefix-warming request
  plus n children (costtax's own vLLM engine fans out n=1 requests and has no such request; a
  server's usage may count it). The partial-block recompute does not widen this bound: vLLM
  caches only full KV blocks (32 tokens as costtax starts vLLM on CPU), so a sample whose prompt
  is in the cache still recomputes the prompt's last partial block (1..32 tokens, at least the
  last token); that is at most its own prompt, inside `prompt_tokens` per sample. It is what
  lifts best-of-N's waste ratio above 1 (stages.py), not this bound.
- **engine prefix-cache counters** (`flag_prefix_counters_disagree`): the engine's own
  counters over the unit's metered window (vLLM's scheduler stats in-process, `/metrics`
  through a server: `prefix_cache_queries - prefix_cache_hits`, tokens it had to prefill) against
  costtax's per-request sum (`prompt_tokens_computed` of the generation calls, plus the score
  calls' computed tokens when the reward model runs on the policy's own server, `served`). They
  count the same requests from two sides (the engine's scheduler vs each request's
  `num_cached_tokens` / usage), so they agree up to PREFIX_COUNTER_TOL_REL plus one KV block per
  unit; the engine may see more than costtax by up to one prompt per n > 1 call (the warming
  request above) — a request the scheduler re-queries after a failed KV allocation, or a
  preempted one recomputed, also counts twice on the engine's side and shows up here.
  Rows whose engine reports no counters (HF, fakes) are not checked (the column stays empty).
- **CPU split** (`flag_cpu_split_disagrees`): `cpu_harness_s` (this process's own CPU clock) +
  `cpu_engine_tree_s` (its descendants' own counters; metering/cpu_split.py) against the
  process-tree sampler's `cpu_s` (a third reading of the same tree), within CPU_SPLIT_TOL_REL of
  it or CPU_SPLIT_TOL_ABS_S (tick quantisation of a few processes read twice, a descendant that
  lived between two sampler walks). Not shares of one total: each side has its own counter.
- **waste ratio** (`flag_waste_below_one`): computed tokens cannot be below the analytic
  minimum unless answers read each other's prefix cache, which happens only when two answers of
  the row share a prompt (--repeats, cycled prompts): then `waste_below_one_reason` says so and
  the flag stays down.
"""
from __future__ import annotations

from typing import Any

from ..store.records import GEN_STAGES
from ._values import is_num as _num

PREFIX_COUNTER_TOL_REL = 0.05
DEFAULT_BLOCK_TOKENS = 32  # engines/vllm_settings.CPU_BLOCK_SIZE_TOKENS, used when run.json does not say
CPU_SPLIT_TOL_REL = 0.10
CPU_SPLIT_TOL_ABS_S = 0.15
WASTE_FLOOR = 1.0 - 1e-9  # float rounding of the two sums

INVARIANT_FLAGS = {
    "flag_reward_computed_exceeds_read": "a score call's reward model computed more tokens than it read",
    "flag_score_tokens_mismatch": "stage_score_tokens_per_answer differs from reward_tokens_computed_per_answer",
    "flag_prefill_exceeds_prompt": "a generation call prefilled more than prompt_tokens x n (+ one prompt for n > 1's warming request)",
    "flag_prefix_counters_disagree": "the engine's prefix-cache counters and costtax's computed-prefill sum disagree beyond the tolerance",
    "flag_cpu_split_disagrees": "harness CPU + engine-tree CPU (own counters) differ from the process-tree sampler's cpu_s beyond the tolerance",
    "flag_waste_below_one": "waste ratio below 1 though no two answers of the row share a prompt",
}


def _f(x) -> float | None:
    return float(x) if _num(x) else None


def reward_flags(calls: list[dict]) -> bool:
    """True when a score call computed more reward-model tokens than it read."""
    for c in calls:
        if c.get("stage") != "score":
            continue
        rc, read = _f(c.get("reward_tokens_computed")), _f(c.get("prompt_tokens"))
        if rc is not None and read is not None and rc > read:
            return True
    return False


def score_tokens_mismatch(row) -> bool:
    a, b = _f(row.get("stage_score_tokens_per_answer")), _f(row.get("reward_tokens_computed_per_answer"))
    if a is None or b is None:
        return False
    return abs(a - b) > 1e-6 * max(1.0, abs(a), abs(b))


def prefill_exceeds(calls: list[dict]) -> bool:
    """True when a generation call's computed prefill breaks prompt_tokens x n (+ warming)."""
    for c in calls:
        if c.get("stage") not in GEN_STAGES:
            continue
        pc, p = _f(c.get("prompt_tokens_computed")), _f(c.get("prompt_tokens"))
        if pc is None or p is None:
            continue
        n = max(int(c.get("n") or 1), 1)
        if pc > p * n + (p if n > 1 else 0.0):
            return True
    return False


def served_on_policy_server(meta: dict, calls: list[dict] = ()) -> bool:
    """The selection reward model runs on the policy's own server (its tokens are in its
    counters): run.json's spec says `served`, or a score call names that scorer (injected)."""
    if str((meta.get("reward_model") or {}).get("spec") or "").strip() == "served":
        return True
    return any(c.get("stage") == "score" and (c.get("extra") or {}).get("reward_model") == "served" for c in calls)


def prefix_counter_check(units: list[dict], calls: list[dict], *, block: int, reward_on_engine: bool) -> dict[str, Any]:
    """The engine's computed prefill (queries - hits over each unit's window) vs costtax's sum."""
    eng, ours, warm, checked = 0.0, 0.0, 0.0, 0
    for u in units:
        st = u.get("engine_stats") or {}
        q, h = _f(st.get("prefix_cache_queries")), _f(st.get("prefix_cache_hits"))
        if q is None or h is None:
            continue
        k = int(u.get("cell_repeat", 0) or 0)
        mine = [c for c in calls if int(c.get("cell_repeat", 0) or 0) == k and c.get("stage") != "eval"]
        total = 0.0
        for c in mine:
            if c.get("stage") in GEN_STAGES:
                pc = _f(c.get("prompt_tokens_computed"))
                if pc is None:
                    return {}
                total += pc
                n = max(int(c.get("n") or 1), 1)
                if n > 1:
                    warm += float(c.get("prompt_tokens") or 0)
            elif c.get("stage") == "score" and reward_on_engine:
                rc = _f(c.get("reward_tokens_computed"))
                if rc is None:
                    return {}
                total += rc
        eng += q - h
        ours += total
        checked += 1
    if not checked:
        return {}
    slack = PREFIX_COUNTER_TOL_REL * max(eng, ours) + block * checked
    bad = ours > eng + slack or eng > ours + slack + warm
    return {"engine_prefill_tokens_computed": eng, "costtax_prefill_tokens_computed": ours, "flag_prefix_counters_disagree": bad}


def cpu_split_check(units: list[dict]) -> dict[str, Any]:
    """Harness + engine-tree CPU (own counters) vs the tree sampler's cpu_s, summed over units."""
    h = e = tree = 0.0
    seen = 0
    for u in units:
        m = u.get("meter") or {}
        hu, eu, tu = _f(m.get("harness_cpu_s")), _f(m.get("engine_cpu_s")), _f(m.get("cpu_s"))
        if hu is None or eu is None or tu is None:
            continue
        h, e, tree, seen = h + hu, e + eu, tree + tu, seen + 1
    if not seen:
        return {}
    bad = abs(h + e - tree) > max(CPU_SPLIT_TOL_ABS_S * seen, CPU_SPLIT_TOL_REL * tree)
    return {"cpu_harness_s": h, "cpu_engine_tree_s": e, "flag_cpu_split_disagrees": bad}


def waste_check(row, answers: list[dict]) -> dict[str, Any]:
    w = _f(row.get("waste_ratio"))
    if w is None or w >= WASTE_FLOOR:
        return {"flag_waste_below_one": False, "waste_below_one_reason": None}
    counts: dict[str, int] = {}
    for a in answers:
        counts[a.get("prompt_id")] = counts.get(a.get("prompt_id"), 0) + 1
    shared = sorted(p for p, k in counts.items() if k > 1)
    if shared:
        return {"flag_waste_below_one": False,
                "waste_below_one_reason": f"{len(shared)} prompt(s) answered more than once (e.g. {shared[0]}): answers read each other's prefix cache"}
    return {"flag_waste_below_one": True, "waste_below_one_reason": None}


def row_invariants(row, units: list[dict], calls: list[dict], answers: list[dict], meta: dict) -> dict[str, Any]:
    """Every invariant column of one row."""
    block = int((meta.get("engine") or {}).get("kv_block_size") or DEFAULT_BLOCK_TOKENS)
    out: dict[str, Any] = {
        "flag_reward_computed_exceeds_read": reward_flags(calls),
        "flag_score_tokens_mismatch": score_tokens_mismatch(row),
        "flag_prefill_exceeds_prompt": prefill_exceeds(calls),
        "flag_prefix_counters_disagree": False,
        "flag_cpu_split_disagrees": False,
    }
    out.update(prefix_counter_check(units, calls, block=block, reward_on_engine=served_on_policy_server(meta, calls)))
    out.update(cpu_split_check(units))
    out.update(waste_check(row, answers))
    return out


def add_invariants(df, data: dict[str, Any]):
    """Invariant columns on every row; raised flags appended to `sanity_flags` (summary.py calls
    this after the stage columns)."""
    from .columns import INVARIANT_COLUMNS

    answers, calls, cells, meta = data["answers"], data["calls"], data["cells"], data["meta"]
    results = []
    for _, row in df.iterrows():
        sel = lambda f: f[(f["cell"] == row["cell"]) & (f["load"] == row["load"])] if len(f) else f  # noqa: E731
        u, c, a = sel(cells), sel(calls), sel(answers)
        units = [r for r in u.to_dict("records") if r.get("status") == "ok"] if len(u) else []
        results.append(row_invariants(row, units, c.to_dict("records") if len(c) else [], a.to_dict("records") if len(a) else [], meta))
    for col in INVARIANT_COLUMNS:
        df[col.name] = [r.get(col.name) for r in results]
    raised = [[k[len("flag_"):] for k in INVARIANT_FLAGS if r.get(k)] for r in results]
    df["sanity_flags"] = [
        ";".join([x for x in (old.split(";") if isinstance(old, str) and old else [])] + new) or None
        for old, new in zip(df["sanity_flags"] if "sanity_flags" in df else [None] * len(df), raised)
    ]
    return df
