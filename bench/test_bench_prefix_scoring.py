"""Shared-prefix reward scoring vs full scoring of one best-of-N group (pytest-benchmark).

Run on its own (NOT together with tests/, whose conftest turns on the Triton interpreter):

    pytest bench/test_bench_prefix_scoring.py -q                      # timings
    pytest bench/test_bench_prefix_scoring.py --benchmark-disable -q  # smoke: each body once

Workload: the embedded judge (SmolLM2-135M, fp32 on CPU, bf16 on CUDA) scores ONE best-of-N
group: one prompt of ``PROMPT_TOKENS`` tokens (a long user turn: notes pasted as context
plus a question) and N responses of ``RESPONSE_TOKENS`` tokens each. Three scorers, each in
the ``prefix_scoring`` group:

* ``full``: ``prefix_cache=False``, every pair runs from its first token:
  N x (instructions + prompt + response) tokens computed;
* ``instructions_cached``: the judge's fixed instructions from the load-time cache, each pair
  still runs its prompt + response (the behaviour before group sharing);
* ``shared_prefix``: the default: the group's shared prefix (instructions from the cache,
  then the rendered user turn up to the responses) once, then the N responses attend to it
  (cascade attention: torch reference on CPU, Triton on CUDA).

Shapes: with timings on, N=16, 1,024-token prompt, 128-token responses (issue 14); with
``--benchmark-disable`` (the CI smoke) N=2, 64 and 16: the three judge loads dominate
(~3 s each on an idle 2-core CPU). ``COSTTAX_BENCH_PREFIX_N`` / ``_PROMPT_TOKENS`` / ``_RESPONSE_TOKENS`` / ``_ROUNDS``
override either. Each benchmark checks its rewards against ``full`` and records the tokens
read and computed in ``extra_info``. The speed-up is reported, not asserted (target on a GPU:
>= 3x at N=16); recorded results are in bench/results/prefix-scoring-*.md.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

_TIMED = {"n": 16, "prompt_tokens": 1024, "response_tokens": 128}
_SMOKE = {"n": 2, "prompt_tokens": 64, "response_tokens": 16}

_NOTES = [
    "The warehouse on Elm Street received {n} pallets of flour on Monday, two fewer than planned.",
    "Invoice {n} was paid late because the supplier changed banks without telling accounts.",
    "Team meeting notes: the new scheduling tool saves about {n} minutes per shift for each nurse.",
    "Customer {n} asked whether the cargo bikes can carry two children and a week of shopping.",
    "The pilot in district {n} cut missed appointments by a fifth after text reminders started.",
    "Budget line {n}: printer toner, paper and postage, lower than last year after going digital.",
    "Safety audit item {n}: the fire door on the second floor was propped open twice this month.",
    "Survey answer {n}: people liked the longer library hours but asked for more quiet rooms.",
]
_OPENERS = [
    "Based on the notes,", "In short,", "Looking at the figures,", "From what you pasted,", "Overall,",
    "To answer directly,", "Summing up,", "The main point is that", "Reading the notes carefully,",
    "Briefly,", "Here is a summary:", "As far as I can tell,", "The notes suggest that", "Put simply,",
    "First of all,", "On balance,",
]


def _shape(benchmark) -> dict:
    base = dict(_SMOKE if benchmark.disabled else _TIMED)
    for key in base:
        env = os.environ.get(f"COSTTAX_BENCH_PREFIX_{key.upper()}")
        if env:
            base[key] = int(env)
    return base


def _trim(tok, text: str, n_tokens: int) -> str:
    """``text`` cut to about ``n_tokens`` tokens of this tokenizer (decode of the first n)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) < n_tokens:
        raise ValueError(f"need {n_tokens} tokens, the text has {len(ids)}")
    return tok.decode(ids[:n_tokens])


def _workload(tok, n: int, prompt_tokens: int, response_tokens: int) -> tuple[str, list[str]]:
    notes = " ".join(_NOTES[i % len(_NOTES)].format(n=i + 3) for i in range(prompt_tokens // 8 + 8))
    question = "\n\nWhich of these problems should the manager deal with first, and why?"
    q_ids = len(tok(question, add_special_tokens=False)["input_ids"])
    prompt = _trim(tok, "Here are my notes from this week:\n" + notes, max(1, prompt_tokens - q_ids)) + question
    responses = []
    for i in range(n):
        body = " ".join(_NOTES[(i + j) % len(_NOTES)].format(n=100 + 7 * i + j) for j in range(response_tokens // 8 + 4))
        responses.append(_trim(tok, f"{_OPENERS[i % len(_OPENERS)]} {body}", response_tokens))
    return prompt, responses


def _load_three(spec: str) -> dict:
    from costtax.rewards import make_reward_model

    made = {
        "full": make_reward_model(spec, prefix_cache=False),
        "instructions_cached": make_reward_model(spec, group_prefix=False),
        "shared_prefix": make_reward_model(spec),
    }
    for rm in made.values():
        rm.load()
    return made


@pytest.fixture(scope="module")
def judges():
    """The three scorers on the embedded judge, loaded once (load time is not benchmarked).

    torch runs ONE CPU thread unless ``COSTTAX_BENCH_PREFIX_THREADS`` says otherwise (0: torch's
    default): on the shared 2-core machine, two OpenMP threads competing with other processes
    spin at barriers and made the smoke pass several times slower. Recorded in extra_info."""
    threads = int(os.environ.get("COSTTAX_BENCH_PREFIX_THREADS", "1"))
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    made = _load_three("judge")
    yield made
    for rm in made.values():
        rm.close()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def judges_1b(tmp_path_factory):
    """CUDA only: the three scorers on a random Llama with a 1B model's body (hidden 2048,
    16 layers, 32 query / 8 kv heads of 128, MLP 8192; the tiny 600-token vocabulary keeps
    the directory small), bf16. Built locally: nothing is downloaded."""
    if not torch.cuda.is_available():
        pytest.skip("the 1B-shaped benchmark needs CUDA")
    from transformers import LlamaConfig, LlamaForCausalLM

    from costtax.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("llama-1b-shape")
    tok = build_tokenizer(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    del model
    made = _load_three(f"judge:{out}")
    yield made
    for rm in made.values():
        rm.close()


@pytest.fixture(scope="module")
def expected():
    """Full-scoring rewards per (model, shape), computed once each."""
    return {}


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _bench(benchmark, judges, expected, bench_env, which: str):
    shape = _shape(benchmark)
    rm = judges[which]
    prompt, responses = _workload(rm._tok, **shape)
    prompts = [prompt] * shape["n"]
    key = (rm.model_ref, *shape.values())
    if key not in expected:  # full scoring once per (model, shape), untimed
        expected[key] = judges["full"].score(prompts, responses).rewards

    def target():
        out = rm.score(prompts, responses)
        _sync()
        return out

    # No warm-up rounds: a round is seconds to minutes on CPU, and the full-scoring pass
    # above has already warmed the allocator and the model's weights in cache.
    rounds = int(os.environ.get("COSTTAX_BENCH_PREFIX_ROUNDS", "2"))
    res = benchmark.pedantic(target, rounds=rounds, warmup_rounds=0, iterations=1)
    diff = max(abs(a - b) for a, b in zip(res.rewards, expected[key]))
    prov = rm.provenance()
    benchmark.extra_info.update(
        {
            **bench_env,
            "scorer": which,
            **shape,
            "judge_instruction_tokens": len(rm._prefix_ids) if rm._prefix_ids else 0,
            "group_prefix_tokens": res.group_prefix_tokens[0] if res.group_prefix_tokens else 0,
            "tokens_read": sum(res.tokens),
            "tokens_computed": sum(res.computed_tokens),
            "reward_tokens_computed_per_answer": sum(res.computed_tokens) / len(res.tokens),
            "kernel_path": res.path,
            "group_prefix": prov.get("group_prefix"),
            "prefix_cache": prov.get("prefix_cache"),
            "dtype": prov.get("dtype"),
            "model": prov.get("model"),
            "torch_threads_now": torch.get_num_threads(),
            "max_abs_diff_vs_full": diff,
        }
    )
    # fp32 (CPU): summation order only. bf16 (CUDA) rounds every layer's activations, and the
    # two paths round differently: a loose bound, the measured difference is recorded.
    tol = 2e-3 if rm._dtype == torch.float32 else 0.5
    assert res.rewards == pytest.approx(expected[key], abs=tol, rel=tol), f"{which} rewards differ from full scoring"


@pytest.mark.benchmark(group="prefix_scoring")
def test_score_group_full(benchmark, judges, expected, bench_env):
    _bench(benchmark, judges, expected, bench_env, "full")


@pytest.mark.benchmark(group="prefix_scoring")
def test_score_group_instructions_cached(benchmark, judges, expected, bench_env):
    _bench(benchmark, judges, expected, bench_env, "instructions_cached")


@pytest.mark.benchmark(group="prefix_scoring")
def test_score_group_shared_prefix(benchmark, judges, expected, bench_env):
    _bench(benchmark, judges, expected, bench_env, "shared_prefix")


@pytest.mark.gpu
@pytest.mark.benchmark(group="prefix_scoring_1b_gpu")
@pytest.mark.parametrize("which", ["full", "instructions_cached", "shared_prefix"])
def test_score_group_1b_shape_gpu(benchmark, judges_1b, expected, bench_env, which):
    """Same group on the 1B-shaped random model on CUDA (target: shared_prefix >= 3x faster
    than full at N=16)."""
    _bench(benchmark, judges_1b, expected, bench_env, which)
