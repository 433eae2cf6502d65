"""`--reward-model served` against vLLM's real OpenAI server (the session's embedded-model
server): on the shipped good/bad pairs its rewards equal the in-process judge's within
TOLERANCE_LOGITS, with identical pair verdicts (same model, fp32 both)."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

# Stated tolerance: vLLM's CPU model and transformers' compute the same fp32 logits in a
# different order (the in-process prefix-cache and group-prefix paths agree with full scoring to
# ~1e-5); 0.02 logits is far below the judge's pair margins. Not yet confirmed on this machine:
# bench/served_reward.py measure records the measured difference.
TOLERANCE_LOGITS = 0.02


def test_served_judge_equals_the_in_process_judge(embedded_server):
    from costtax.model_files import DEFAULT_MODEL, resolve_model
    from costtax.rewards import make_reward_model
    from costtax.rewards.calibration import load_judge_pairs

    class Policy:
        base_url, model, tokenizer_dir = embedded_server.base_url, embedded_server.model_name, str(resolve_model(DEFAULT_MODEL))

    pairs = load_judge_pairs()
    prompts = [p["prompt"] for p in pairs] * 2
    responses = [p["good"] for p in pairs] + [p["bad"] for p in pairs]
    served = make_reward_model("served", policy=Policy())
    served.load()
    try:
        got = served.score(prompts, responses)
    finally:
        served.close()
    local = make_reward_model("judge")
    local.load()
    try:
        ref = local.score(prompts, responses)
        assert served.token_ids == local.token_ids
    finally:
        local.close()
    diffs = [abs(a - b) for a, b in zip(got.rewards, ref.rewards)]
    print(f"\nserved vs in-process judge on {len(diffs)} responses: max |diff| {max(diffs):.3g} logits")
    assert max(diffs) <= TOLERANCE_LOGITS
    n = len(pairs)
    assert [got.rewards[i] > got.rewards[n + i] for i in range(n)] == [ref.rewards[i] > ref.rewards[n + i] for i in range(n)]
    assert got.tokens == ref.tokens
    assert got.cached_tokens and sum(got.cached_tokens) > 0  # the server's prefix cache held the instructions


def test_scalar_reward_model_on_a_real_pooling_server(tiny_classifier_dir, tmp_path):
    """`openai:URL,kind=scalar` against vLLM running the tiny 1-label classifier as a pooling
    model (`--runner pooling`, started through --serve-arg): /pooling's raw output equals
    the in-process scalar head's reward."""
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it)")
    from costtax.engines.serve import ServedVllm
    from costtax.rewards import make_reward_model

    prompts, responses = ["What is 2+2?", "Name a colour.", "Say hi."], ["4", "Blue is a colour.", "Hi!"]
    with ServedVllm(tiny_classifier_dir, tmp_path / "server.log", seed=0, max_model_len=1024, serve_args=["--runner=pooling"]) as served:
        rm = make_reward_model(f"openai:{served.base_url},kind=scalar")
        rm.load()
        try:
            got = rm.score(prompts, responses)
        finally:
            rm.close()
    local = make_reward_model(f"scalar:{tiny_classifier_dir}", device="cpu", kernel_path="reference")
    local.load()
    ref = local.score(prompts, responses)
    local.close()
    print(f"\npooling server vs in-process scalar head: {got.rewards} vs {ref.rewards}")
    for a, b in zip(got.rewards, ref.rewards):
        assert a == pytest.approx(b, abs=1e-3)
