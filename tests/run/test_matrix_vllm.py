"""End to end on the real engine: the pairwise matrix (tests/run/matrix_cells.py: technique x reward
model x prompts x load, 28 cells) on the embedded SmolLM2 through vLLM's OpenAI server.

One policy server for the whole matrix: the session's `embedded_server` (started as --serve
starts it; test_served_reward_vllm shares it), reached through costtax's openai engine, whose
prefix-cache counters come from the server's /metrics. Reward models, each loaded once per module
and injected: the in-process judge (transformers), the served judge on the policy's own server
(`served`), the tiny scalar head in-process, and the same tiny head served by a second vLLM
server with --runner pooling (`openai:URL,kind=scalar`), started only for its cells.

Every run must finish ok with no accounting violation and no invariant flag
(report/invariants.py: reward tokens, prefill, engine counters vs costtax's sums, CPU split,
waste ratio). bon:n=4's waste ratio must sit in WASTE_BAND (derived below). The in-process
engine's own counters (vLLM scheduler stats) are checked the same way by test_e2e.py's run.

Cost: short answers (max 16 tokens; HumanEval raises its own cap to 384, so one HumanEval prompt
per cell), two prompts elsewhere (concurrency=2 needs two), no warm-up, no judge calibration, no
evaluation scorer.
"""
from __future__ import annotations

import csv
import time

import pytest

import matrix_cells as mc
from costtax.config import RunConfig
from costtax.run.profile import profile
from costtax.report.invariants import INVARIANT_FLAGS

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

BLOCK = 32  # KV block size as costtax starts vLLM on CPU (engines/vllm_settings.CPU_BLOCK_SIZE_TOKENS)
N = 4


def waste_band(row) -> tuple[float, float]:
    """bon:n=4's waste ratio, derived from vLLM's block-granular prefix cache.

    Per answer: a prompt of P tokens, O generated tokens over the 4 samples, a reward model that
    computes Rc tokens (measured; cross-checked by the invariants), and the analytic minimum
    M = P + O + min(P + O, reward tokens read) (report/stages.py). The first sample prefills P.
    vLLM caches only full KV blocks of BLOCK tokens, and recomputes at least a prompt's last
    token even when all of it is cached, so each of the other 3 samples recomputes the prompt's
    last partial block: r = P - BLOCK * floor((P - 1) / BLOCK), 1 <= r <= BLOCK (on vLLM-CPU as on
    GPU; what makes CPU runs show it is the 32-token block against prompts of ~40-60 tokens: r is
    a large share of P). So tokens computed lie in [P + 3 + O + Rc, P + 3 * BLOCK + O + Rc] and
    the waste ratio in that range over M, summed over the row's answers. Above it: the samples did
    not share the prompt's cache (share_prefix broken, prefix caching off); below it: a follower
    computed nothing of its prompt, which vLLM never does."""
    answers = float(row["answers"])
    p = float(row["prompt_tokens_per_answer"]) / N  # prompt_tokens x n per answer
    o = float(row["output_tokens_per_answer"])
    rc = row.get("reward_tokens_computed_per_answer")
    rc = float(rc) if rc not in ("", None) else float(row["reward_tokens_per_answer"])
    m = float(row["tokens_min_per_answer"])
    assert answers > 0 and m > 0
    return (p + (N - 1) * 1 + o + rc) / m, (p + (N - 1) * BLOCK + o + rc) / m


@pytest.fixture(scope="module")
def policy(embedded_server):
    from costtax.engines import make_engine

    engine = make_engine("openai", embedded_server.model_name, **embedded_server.engine_kwargs(), seed=0)
    engine.start()
    yield engine
    engine.close()


class Scorers:
    """Each reward model loaded on first use, once per module."""

    def __init__(self, policy, classifier_dir, tmp):
        self.policy, self.classifier_dir, self.tmp = policy, classifier_dir, tmp
        self.loaded: dict = {}
        self.pooling = None

    def get(self, name: str):
        if name not in self.loaded:
            from costtax.rewards import make_reward_model

            if name in ("judge", mc.NONE):
                rm = self.loaded.get("judge") or make_reward_model("judge")
            elif name == "served_judge":
                rm = make_reward_model("served", policy=self.policy)
            elif name == "scalar_local":
                rm = make_reward_model(f"scalar:{self.classifier_dir}", device="cpu")
            elif name == "served_scalar":
                from costtax.engines.serve import ServedVllm

                self.pooling = ServedVllm(self.classifier_dir, self.tmp / "pooling.log", seed=0, max_model_len=1024,
                                          serve_args=["--runner=pooling"])
                self.pooling.__enter__()
                rm = make_reward_model(f"openai:{self.pooling.base_url},kind=scalar")
            else:
                raise AssertionError(name)
            if rm is not self.loaded.get("judge"):
                rm.load()
            self.loaded[name] = rm
            if name in ("judge", mc.NONE):
                self.loaded["judge"] = self.loaded[mc.NONE] = rm
        return self.loaded[name]

    def close(self):
        for rm in {id(v): v for v in self.loaded.values()}.values():
            try:
                rm.close()
            except Exception:
                pass
        if self.pooling is not None:
            self.pooling.__exit__(None, None, None)


@pytest.fixture(scope="module")
def scorers(policy, tiny_classifier_dir, tmp_path_factory):
    s = Scorers(policy, tiny_classifier_dir, tmp_path_factory.mktemp("matrix-rewards"))
    yield s
    s.close()


def groups() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The matrix's cells as profile runs: one run per (reward model, prompts, load), holding
    those cells' techniques (plain, costtax's baseline, is in every run anyway). Cells without a
    reward model run with the in-process judge injected (never called for selection: plain, sc
    and cai do not select), so they share a run with the judge cells of the same prompts and
    load. The pooling server starts at its first run and lives until the module ends."""
    runs: dict[tuple[str, str, str], list[str]] = {}
    for c in mc.cells():
        scorer = "judge" if c.reward_model == mc.NONE else c.reward_model
        runs.setdefault((scorer, c.prompts, c.load), [])
        if c.technique not in runs[(scorer, c.prompts, c.load)]:
            runs[(scorer, c.prompts, c.load)].append(c.technique)
    # round robin over reward models: each one's first run comes early (a broken reward model
    # shows in the first minutes, not at the end)
    seen: dict[str, int] = {}
    ranked = []
    for (r, p, load), ts in runs.items():
        seen[r] = seen.get(r, -1) + 1
        ranked.append(((seen[r], list(mc.REWARD_MODELS).index(r)), (r, p, load, tuple(ts))))
    return [g for _, g in sorted(ranked)]


GROUPS = groups()


def test_groups_hold_every_cell():
    held = {(t, r, p, load) for r, p, load, ts in GROUPS for t in ts}
    for c in mc.cells():
        assert (c.technique, "judge" if c.reward_model == mc.NONE else c.reward_model, c.prompts, c.load) in held, c


@pytest.mark.parametrize("group", GROUPS, ids=["|".join((r, p, load, "+".join(ts))) for r, p, load, ts in GROUPS])
def test_matrix_run(group, policy, scorers, tmp_path):
    reward_model, prompts, load, techniques = group
    scorer = scorers.get(reward_model)
    limit = 1 if prompts == "humaneval" else 2
    cfg = RunConfig(techniques=techniques, prompts=(prompts,), limit=limit, max_tokens=16, load=(load,),
                    warmup_answers=0, judge_calibration=False, eval_reward_model="none", out=str(tmp_path / "run"))
    t0 = time.monotonic()
    res = profile(cfg, engine=policy, scorer=scorer)
    wall = time.monotonic() - t0
    with open(res.run_dir / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    got = {r["technique"] for r in rows}
    assert {t.split(":")[0] for t in techniques} | {"plain"} == got, got
    for row in rows:
        print(f"\n{reward_model}|{prompts}|{load}|{row['cell']}: run {wall:.1f} s, cell {float(row['cell_wall_s'] or 0):.1f} s, "
              f"waste_ratio {row['waste_ratio']}, engine/costtax prefill {row['engine_prefill_tokens_computed']}/"
              f"{row['costtax_prefill_tokens_computed']}, cpu harness/engine {row['cpu_harness_s']}/{row['cpu_engine_tree_s']}, "
              f"foreign_cpu_share {row['foreign_cpu_share']}")
        assert row["status"] == "ok", row["error"]
        assert int(row["answers"]) == limit
        assert row["accounting_violations"] in ("0", "0.0"), row["accounting_example"]
        raised = {k: row[k] for k in INVARIANT_FLAGS if row[k] not in ("False", "", None)}
        assert not raised, (row["cell"], raised, row["sanity_flags"])
        # the engine-counter check ran (the server's /metrics answered), and the CPU split
        assert row["engine_prefill_tokens_computed"] not in ("", None), row["cell"]
        assert row["cpu_harness_s"] not in ("", None) and row["cpu_engine_tree_s"] not in ("", None)
        if row["cell"] == "bon:n=4":
            lo, hi = waste_band(row)
            w = float(row["waste_ratio"])
            print(f"  bon:n=4 waste band [{lo:.3f}, {hi:.3f}], measured {w:.3f}")
            # the band's floor may touch 1.0 (a reward model that computes fewer tokens than the
            # prompt + responses it reads, e.g. the judge's cached template on HumanEval's long
            # prompt); the ratio itself never goes below 1 (flag_waste_below_one, checked above)
            assert lo - 1e-9 <= w <= hi + 1e-9, (lo, w, hi)
            assert w >= 1.0 - 1e-9, w
